from setuptools import find_packages, setup

# dagster and its libraries are released in lock-step (libraries are versioned 0.(minor+16).patch);
# an unpinned install can resolve to a years-old dagster-postgres that pip check does not flag.
DAGSTER_VERSION = "1.13.27"
DAGSTER_LIB_VERSION = "0.29.27"
CELERY_EXTRA = [
    f"dagster-celery=={DAGSTER_LIB_VERSION}",
    "celery[redis]>=5.4,<5.8",
    "redis>=5.0,<9",
]
K8S_EXTRA = [f"dagster-k8s=={DAGSTER_LIB_VERSION}"]

setup(
    name="session_learning",
    version="0.1.0",
    description="A Dagster code location that retrains trading models after every session, "
    "behind benchmark gates.",
    packages=find_packages(exclude=["tests*", "bench*"]),
    python_requires=">=3.11",
    install_requires=[
        f"dagster=={DAGSTER_VERSION}",
        f"dagster-webserver=={DAGSTER_VERSION}",
        f"dagster-graphql=={DAGSTER_VERSION}",
        f"dagster-postgres=={DAGSTER_LIB_VERSION}",
        "pandas>=3.0,<3.2",
        "numpy>=2.2,<2.6",
        "catboost==1.2.10",
        "scikit-learn>=1.6,<1.10",
        "sqlalchemy>=2.0,<2.2",
        # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; URLs here say postgresql+psycopg2://
        "psycopg2-binary>=2.9,<3",
        # Parquet for intermediate asset values (no pickle) and the bar-file source.
        "pyarrow>=18",
        # PNG plots in asset metadata and replay reports.
        "matplotlib>=3.9",
        # Trading calendars (CME Globex FX/metals sessions, breaks, holidays; exchanges; 24/7).
        "pandas_market_calendars>=5.5,<5.6",
    ],
    extras_require={
        # Dagster's Celery executor with a Redis broker: steps run on `dagster-celery` workers.
        # Same lock-step pin as dagster-postgres; celery[redis] brings the Redis client.
        "celery": CELERY_EXTRA,
        # K8sRunLauncher and k8s_job_executor: a pod per run, and per step.
        "k8s": K8S_EXTRA,
        "dev": [
            "pytest>=8",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "playwright>=1.45",
            # The end-to-end suite runs the learning job on Celery workers; the executor tests
            # build the Kubernetes one too.
            *CELERY_EXTRA,
            *K8S_EXTRA,
        ],
    },
    entry_points={"console_scripts": ["session-learning=session_learning.cli:main"]},
)
