"""The detector: model, data, loss, training, evaluation, export and deploy."""
