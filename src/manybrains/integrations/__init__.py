"""Run code written for other parallel libraries on manybrains.

:mod:`manybrains.integrations.joblib` registers a joblib backend named ``"manybrains"``, so
``joblib.Parallel`` and scikit-learn's ``n_jobs`` run on a manybrains pool.
"""
