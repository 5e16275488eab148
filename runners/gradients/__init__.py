"""Estimators' gradients against the true gradient of the expected objective (docs/gradients.md).

`exact`: the reference gradient (enumeration, local expectation; torch only); `sampling`: many
independent gradient estimates of one estimator at once; `measure`: their bias, variance and error
against the reference, per layer; `stats`: the numbers and their bootstrap intervals (numpy only).
"""
