"""PyTorch models of the DeepOBS test problems, one file per model family."""
