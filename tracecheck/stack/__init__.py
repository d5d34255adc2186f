"""Deploying the pipeline: the Kubernetes manifests under ``stack/`` (render, validate, apply),
the kube-apiserver TracingConfiguration check, and the local pipeline (``local``)."""
