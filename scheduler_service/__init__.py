"""The AI-Stack scheduler service: the scheduling core and the drivers that use it.

`scheduler_service.core` is the pure scheduling function; drivers (the cluster driver, the
simulator, the local runner) translate their world into its snapshot and carry out its plan.
"""
