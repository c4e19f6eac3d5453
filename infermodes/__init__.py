"""infermodes: the four inference modes of a managed ML platform on any Kubernetes cluster."""
