"""Program synthesis support: running untrusted, model-written Python code in a sandbox."""
