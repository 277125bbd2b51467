"""The peer path: what a user without edgekd ships (optimum export, ORTOptimizer, ORTQuantizer dynamic int8)."""
