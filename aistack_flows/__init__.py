"""AI-Stack Flows: the library for pipeline authors.

It describes GPU steps (whole GPUs or GPU slices, queues, topology wishes), adds them to Hera
pipelines and submits those pipelines to the AI-Stack scheduler; the public API grows here as
its pieces land.
"""

__all__: list[str] = []
