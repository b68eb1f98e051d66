"""Merchant reputation pipeline: staging, validation, scoring, enforcement, publishing.

The package is pure Polars transforms plus one I/O edge (:mod:`transforms.lake`);
the Airflow DAGs in ``dags/`` and the ``reputation`` CLI call the same functions in
:mod:`transforms.pipeline`.
"""

__version__ = "0.1.0"
