"""`python -m worker`, what `finetune worker` runs: a worker configured by the FT_ settings."""

from app.config import get_settings
from worker.main import run_worker

run_worker(get_settings())
