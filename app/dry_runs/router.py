from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.auth import CallerDep
from app.deps import SessionDep, SessionRoute, SettingsDep
from app.dry_runs import service
from app.dry_runs.schemas import DryRunOut
from app.errors import error_responses
from app.jobs.spec import JobSpec
from app.params import DryRunId

router = APIRouter(tags=["dry runs"], route_class=SessionRoute)


@router.post("/v1/jobs/validate", response_model=DryRunOut,
             responses={202: {"model": DryRunOut,
                              "description": "No worker answered in time: poll `url`"},
                        **error_responses(400, 422)})
def validate_job(spec: JobSpec, request: Request, response: Response, caller: CallerDep,
                 settings: SettingsDep) -> DryRunOut:
    """Dry-run a job spec (the body of POST /v1/jobs): a worker loads and tokenizes the data
    and builds the model's shapes, then reports rows, token lengths, steps, parameters,
    memory and time, with errors and warnings. Nothing is queued or trained."""
    dry_run = DryRunOut.from_dry_run(*service.submit(request.app.state.session_factory,
                                                     caller, spec, settings))
    if dry_run.status != "done":
        response.status_code = 202
        response.headers["Location"] = dry_run.url
    return dry_run


@router.get("/v1/dry-runs/{dry_run_id}", response_model=DryRunOut,
            responses=error_responses(404))
def get_dry_run(dry_run_id: DryRunId, caller: CallerDep, session: SessionDep,
                settings: SettingsDep) -> DryRunOut:
    """A dry run and, once a worker has answered, its report."""
    return DryRunOut.from_dry_run(*service.get(session, caller, dry_run_id, settings))
