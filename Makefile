# The two commands of the README, and a few helpers. Python: $(PYTHON) (default python3).
PYTHON ?= python3
export PYTHON

.PHONY: demo test test-production setup services services-stop lint bench-batch ui serve-dagster package screenshots

package: ## the Lambda zips and the Glue script for infra/ (dist/)
	$(PYTHON) -m recsys_platform.cli package --out dist

demo: ## set up, then run the whole platform end to end on the embedded default
	scripts/setup.sh
	$(PYTHON) -m recsys_platform.cli demo

# pytest-xdist, one test file per worker (a file's tests share its fixtures). Stage 1 on one worker
# per core; stage 2's four files at once: they mostly wait (the AWS provider polling moto, the
# daemon's ticks, pip), so four on two cores took 7 minutes against 12 one after another.
STAGE_1 = -n 2 --dist loadfile
STAGE_2 = -m production -n 4 --dist loadfile

test: ## set up (Python packages, MariaDB, Terraform, checkov, chromium), start the test servers, run both test stages
	scripts/setup.sh --services --infra --browser
	scripts/services.sh start
	. .services/env && $(PYTHON) -m pytest $(STAGE_1)
	. .services/env && $(PYTHON) -m pytest $(STAGE_2)

test-production: ## only the second stage: the Spark cluster, Terraform applied to moto, the Dagster daemon on PostgreSQL
	scripts/services.sh start
	. .services/env && $(PYTHON) -m pytest $(STAGE_2)

setup:
	scripts/setup.sh

services: ## start MariaDB and the S3-compatible endpoint for the tests (variables in .services/env)
	scripts/services.sh start

services-stop:
	scripts/services.sh stop

lint:
	$(PYTHON) -m ruff check .

bench-batch: ## the batch benchmark at scale 100 against MariaDB (writes benchmarks/results/batch.json)
	scripts/services.sh start
	. .services/env && $(PYTHON) benchmarks/batch.py --scales 100

screenshots: ## the README's pictures of the UI (docs/img/), over a fresh demo
	scripts/setup.sh --browser
	$(PYTHON) scripts/screenshots.py

ui: ## the Dagster UI over the demo's state
	DAGSTER_HOME=$${RECSYS_HOME:-$$PWD/.recsys}/dagster_home RECSYS_HOME=$${RECSYS_HOME:-$$PWD/.recsys} $(PYTHON) -m dagster dev -w workspace.yaml

serve-dagster: ## the production Dagster deployment over the demo's state: webserver + daemon on PostgreSQL, run queue, retries
	RECSYS_HOME=$${RECSYS_HOME:-$$PWD/.recsys} $(PYTHON) -m recsys_platform.cli serve-dagster
