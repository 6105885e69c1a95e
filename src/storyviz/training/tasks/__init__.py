"""The Tasks that train each kind of model; listed by name in storyviz.training.task.TASKS."""
