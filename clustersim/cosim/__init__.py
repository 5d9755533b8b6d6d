"""The co-simulation: the plant node on a transport, the agents as tasks, processes or external
programs, the broker, the Mesa model that steps the control intervals; and the in-process loop
of the modes without agents (``none``, ``local``)."""
