"""The return model: features, the network, its checkpoints, storage and reports."""
