"""What ``run`` needs beyond the models: the bicubic baseline and pretraining, callbacks."""
