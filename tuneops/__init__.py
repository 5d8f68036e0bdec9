"""tuneops: GitOps fine-tuning and serving of LLMs on Kubernetes."""

__version__ = "0.1.0"
