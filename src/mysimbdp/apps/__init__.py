"""Built-in clientbatchingestapps the platform ships (``python -m mysimbdp.apps.<name>``)."""
