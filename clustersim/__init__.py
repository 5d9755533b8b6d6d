"""clustersim: co-simulator for distributed cluster volt/var control of distribution networks."""

from clustersim.errors import (
    BrokerError,
    CaseError,
    ClusterSimError,
    MessageError,
    PartitionError,
    PowerFlowError,
    ScenarioError,
)

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "CaseError",
    "ClusterSimError",
    "MessageError",
    "PartitionError",
    "PowerFlowError",
    "ScenarioError",
    "__version__",
]
