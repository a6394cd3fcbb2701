"""cloudplan: plan, cost and bring up bare-metal private clouds."""

__version__ = "0.1.0"
