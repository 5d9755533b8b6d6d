"""MQTT transport, message envelope, channel model (issue 5)."""
