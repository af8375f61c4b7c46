"""Neural networks. Models take tensors and know nothing of datasets, trainers or planners."""
