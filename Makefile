# Thin aliases; the scripts are the source of truth (and what CI runs).
.PHONY: demo test lint ui

# make test ARGS="-k journal -x"
ARGS ?=

demo:
	./scripts/demo $(ARGS)

test:
	./scripts/test $(ARGS)

lint:
	@bash -c 'source scripts/lib.sh && sl_bootstrap && cd "$$SL_REPO" && sl_lint'

# Dagster UI on the local SQLite instance (var/dagster_home), like the demo uses.
ui:
	@bash -c 'source scripts/lib.sh && sl_bootstrap && sl_local_dagster_home && cd "$$SL_REPO" && exec .venv/bin/dagster dev -h 127.0.0.1 -w workspace.yaml $(ARGS)'
