"""OpenAI's fine-tuning API (files, fine_tuning.jobs, their events and checkpoints), served
on the service's own datasets and jobs: `app.openai_compat.router.router`."""
