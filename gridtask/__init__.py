"""gridtask: run AI and compute tasks on machines nobody has to trust."""

__version__ = "0.1.0"
