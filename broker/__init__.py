"""MQTT transport, message envelope, channel model, brokers and ACL files."""
