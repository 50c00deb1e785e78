"""One partition: the task that applies its requests one at a time.

The task, its decisions, pending writes, mutations and commands, the change
feed Watch reads, and recovery at start. Nothing here imports the node.
"""
