// One job: status, progress and error; live curves of its training loss, learning rate and
// evaluation scores; its timeline, attempts, checkpoints, final metrics, samples, model files
// and resolved spec. The job's stream replays every past event and metric point before the
// live ones, and resumes after the last one received when it reconnects, so the page loads
// neither separately: no point is drawn twice or missed. The job object itself (status,
// progress, attempts, metrics) is fetched again when an event changes it, and every few
// seconds while it runs, since the stream does not carry the progress.
import {api, download, follow} from "../api.js";
import {metricChart} from "../charts.js";
import {
  elapsed, errorBox, fmtBytes, fmtDuration, fmtNumber, fmtTime, h, keyValues, progressBar,
  replace, section, statusBadge, table,
} from "../dom.js";

const PROGRESS_REFRESH_MS = 3000;
const ACTIVE = new Set(["queued", "running", "cancelling"]);
const CANCELLABLE = new Set(["queued", "running"]);
// The event kinds after which the job's status, attempts, error or metrics have changed.
const CHANGING_KINDS = new Set(["queued", "started", "cancelling", "cancelled", "succeeded",
  "failed", "interrupted", "retrying", "attempt_failed", "lease_expired", "resent"]);
// Evaluation timings are no scores: as curves they would only hide the ones that matter.
const EVAL_TIMING = /_(runtime|samples_per_second|steps_per_second)$/;
const PER_CLASS = "_per_class";

export default async function jobView(main, {params: [id], signal}) {
  let job;
  try {
    job = await api(`/v1/jobs/${id}`, {signal});
  } catch (error) {
    if (error.status !== 404) throw error;
    replace(main, errorBox(error, "Job not found"),
      h("p", {}, h("a", {href: "#/jobs"}, "Back to the jobs")));
    return;
  }

  const head = h("div", {class: "page-head"});
  const notice = h("div", {id: "job-notice"});
  const overview = h("div", {id: "job-overview"});
  const jobError = h("div", {id: "job-error"});
  const finalMetrics = h("div", {id: "final-metrics"});
  const perClass = h("div", {id: "per-class"});
  const timeline = h("ol", {id: "timeline", class: "timeline"});
  const attempts = h("div", {id: "attempts"});
  const checkpoints = h("div", {id: "checkpoints"});
  const artifacts = h("div", {id: "artifacts"});
  const samples = h("div", {id: "samples"});
  const samplesCard = wide(section("Samples", samples));
  samplesCard.hidden = true;
  const chart = (chartId, options) => {
    const box = h("div", {id: chartId, class: "chart"});
    return {box, chart: metricChart(box, {signal, ...options})};
  };
  const loss = chart("chart-loss", {color: "--accent"});
  const learningRate = chart("chart-learning-rate", {color: "--ok"});
  const evals = chart("chart-eval", {
    split: true, height: 160, empty: "No evaluation yet: it runs at every evaluation step."});

  replace(main, head, notice, h("div", {class: "grid job-grid"},
    wide(section("Overview", jobError, overview)),
    section("Training loss", loss.box),
    section("Learning rate", learningRate.box),
    section("Timeline", timeline),
    wide(section("Evaluation", evals.box)),
    wide(section("Final metrics", finalMetrics, perClass)),
    samplesCard,
    wide(section("Model files", artifacts)),
    wide(section("Checkpoints", checkpoints)),
    wide(section("Attempts", attempts)),
    wide(section("Spec", h("pre", {id: "spec"}, JSON.stringify(job.spec, null, 2))))));

  const actions = {
    cancel: async () => {
      if (!confirm(`Cancel ${job.name || job.id}?`)) return;
      render(await api(`/v1/jobs/${id}/cancel`, {method: "POST", signal}));
    },
    downloadModel: () => download(`/v1/jobs/${id}/model`, `${id}-model.tar.gz`),
    downloadFile: path => download(`/v1/jobs/${id}/artifacts/${encodePath(path)}`,
                                   path.split("/").pop()),
  };
  const perform = action => (...args) => {
    replace(notice);
    action(...args).catch(error => replace(notice, errorBox(error, "That did not work")));
  };

  // The head and the file list change with the status only: redrawn at every progress
  // refresh, a button could vanish under a click.
  let shownStatus = null;
  function render(latest) {
    job = latest;
    if (shownStatus !== job.status) {
      shownStatus = job.status;
      renderHead();
      showArtifacts().catch(error => replace(artifacts, errorBox(error, "No file list")));
    }
    replace(jobError, job.error
      ? errorBox(job.error, job.status === "failed" ? "The job failed" : "Last error") : null);
    replace(overview, job.waiting_for ? h("div", {class: "warning-box", id: "waiting-for"},
      h("strong", {}, "Waiting for a worker"), h("p", {}, job.waiting_for.reason)) : null,
    overviewList(job));
    replace(attempts, attemptsTable(job.attempts));
    replace(finalMetrics, finalMetricsList(job));
    replace(perClass, perClassTables(job.metrics && job.metrics.final));
  }

  function renderHead() {
    replace(head, h("h1", {}, job.name || job.id, " ",
                    h("span", {id: "job-status"}, statusBadge(job.status))),
      h("div", {class: "actions"},
        CANCELLABLE.has(job.status) ? h("button", {type: "button", id: "cancel", class: "danger",
                                                   on: {click: perform(actions.cancel)}},
          "Cancel") : null,
        job.status === "succeeded" ? h("button", {type: "button", id: "download-model",
                                                  class: "primary",
                                                  on: {click: perform(actions.downloadModel)}},
          "Download model") : null));
  }

  async function showArtifacts() {
    if (job.status !== "succeeded") {
      replace(artifacts, h("p", {class: "muted empty"},
        "The model's files appear when the job succeeds."));
      return;
    }
    const files = await api(`/v1/jobs/${id}/artifacts`, {signal});
    replace(artifacts, table([
      ["File", file => h("span", {class: "mono"}, file.path)],
      ["Size", file => fmtBytes(file.size_bytes)],
      ["sha256", file => h("code", {class: "hash"}, file.sha256)],
      ["", file => h("button", {type: "button", class: "download", "data-path": file.path,
                                on: {click: perform(() => actions.downloadFile(file.path))}},
        "Download")],
    ], files.data, {empty: "The job published no files."}));
  }

  const refreshJob = coalesced(async () => render(await api(`/v1/jobs/${id}`, {signal})));
  const refreshCheckpoints = coalesced(async () => {
    const page = await api(`/v1/fine_tuning/jobs/${id}/checkpoints`, {query: {limit: 100}, signal});
    replace(checkpoints, checkpointsTable(page.data));
  });

  render(job);
  refreshCheckpoints();
  const timer = setInterval(() => { if (ACTIVE.has(job.status)) refreshJob(); },
                            PROGRESS_REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));

  const addPoint = ({name, step, value}) => {
    const curve = name === "loss" ? loss : name === "learning_rate" ? learningRate
      : name.startsWith("eval_") && !EVAL_TIMING.test(name) ? evals : null;
    if (curve) curve.chart.add(name, step, value);
  };
  const addEvent = event => {
    appendKeepingBottom(timeline, timelineItem(event));
    if (CHANGING_KINDS.has(event.kind)) refreshJob();
    if (event.kind === "checkpoint") refreshCheckpoints();
    if (event.kind === "samples" && Array.isArray(event.data.samples)) {
      replace(samples, samplesTable(event.data.samples));
      samplesCard.hidden = false;
    }
  };
  follow(`/v1/jobs/${id}/events`, {signal, onMessage: (name, data) => {
    if (name === "metric") addPoint(data);
    else if (name === "event") addEvent(data);
    else if (name === "end") {
      refreshJob();
      refreshCheckpoints();
    }
  }}).catch(error => {
    if (!signal.aborted) timeline.after(errorBox(error, "Live updates stopped"));
  });
}

/** Runs `task` now, or once more right after the run in progress: never two at a time. */
function coalesced(task) {
  let running = null;
  let again = false;
  const run = () => {
    if (running) {
      again = true;
      return;
    }
    running = task().catch(() => {}).finally(() => {
      running = null;
      if (again) {
        again = false;
        run();
      }
    });
  };
  return run;
}

function wide(card) {
  card.classList.add("wide");
  return card;
}

function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

function overviewList(job) {
  const {progress, spec} = job;
  const steps = progress.total_steps
    ? ` step ${fmtNumber(progress.step)} of ${fmtNumber(progress.total_steps)}` : "";
  const epoch = progress.epoch !== null ? ` · epoch ${fmtNumber(progress.epoch, 3)}` : "";
  return keyValues([
    ["ID", h("span", {class: "mono"}, job.id)],
    ["Progress", h("span", {id: "job-progress"}, progressBar(progress, job.status),
      h("span", {class: "muted"}, steps, epoch))],
    ["Task", spec.task],
    ["Model", h("span", {class: "mono"}, spec.model)],
    ["Created", fmtTime(job.created_at)],
    ["Started", fmtTime(job.started_at)],
    ["Finished", fmtTime(job.finished_at)],
    ["Duration", fmtDuration(elapsed(job.started_at, job.finished_at))],
    ["Attempts", `${job.attempts.length} of at most ${spec.max_attempts}`],
  ]);
}

function attemptsTable(attempts) {
  const settings = attempt => attempt.settings || {};
  const compute = attempt => settings(attempt).compute || {};
  const yesNo = value => (value === undefined || value === null ? "—" : value ? "yes" : "no");
  return table([
    ["#", attempt => attempt.number],
    ["Worker", attempt => h("span", {class: "mono"}, attempt.worker)],
    ["Started", attempt => fmtTime(attempt.started_at)],
    ["Ended", attempt => fmtTime(attempt.ended_at)],
    ["Outcome", attempt => attempt.outcome || "running"],
    ["Error", attempt => (attempt.error_code ? h("code", {}, attempt.error_code) : "—")],
    ["Resumed from", attempt => fmtNumber(attempt.resumed_from_step)],
    ["Batch", attempt => fmtNumber(settings(attempt).batch_size)],
    ["Accum.", attempt => fmtNumber(settings(attempt).gradient_accumulation_steps)],
    ["Grad. ckpt", attempt => yesNo(settings(attempt).gradient_checkpointing)],
    ["Precision", attempt => compute(attempt).precision || "—"],
    ["Attention", attempt => compute(attempt).attention || "—"],
    ["Device", attempt => [compute(attempt).device, compute(attempt).device_name]
      .filter(Boolean).join(" · ") || "—"],
  ], attempts, {empty: "No attempt yet: the job waits for a worker.",
                rowProps: attempt => ({"data-attempt": attempt.number})});
}

function checkpointsTable(checkpoints) {
  return table([
    ["Step", checkpoint => fmtNumber(checkpoint.step_number)],
    ["Train loss", checkpoint => fmtNumber(checkpoint.metrics.train_loss)],
    ["Validation loss", checkpoint => fmtNumber(checkpoint.metrics.valid_loss)],
    ["Saved", checkpoint => fmtTime(new Date(checkpoint.created_at * 1000).toISOString())],
  ], checkpoints, {empty: "No checkpoint kept: they are saved every few minutes (or every "
                          + "checkpoint_steps) for resuming.",
                   rowProps: checkpoint => ({"data-step": checkpoint.step_number})});
}

function finalMetricsList(job) {
  const final = job.metrics && job.metrics.final;
  if (!final) {
    return h("p", {class: "muted empty"}, ACTIVE.has(job.status)
      ? "They appear when the job succeeds." : "The job ended without final metrics.");
  }
  return keyValues(Object.entries(final)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => [name, fmtNumber(value)]));
}

function perClassTables(final) {
  const reports = Object.entries(final || {}).filter(([name, report]) =>
    name.endsWith(PER_CLASS) && report && typeof report === "object");
  return reports.map(([name, report]) => {
    const split = name.slice(0, -PER_CLASS.length);
    const rows = Object.entries(report);
    const scoreNames = [...new Set(rows.flatMap(([, scores]) => Object.keys(scores || {})))];
    return h("div", {class: "per-class", "data-split": split}, h("h3", {}, `Per class (${split})`),
      table([["Label", ([label]) => label],
             ...scoreNames.map(score => [score, ([, scores]) => fmtNumber((scores || {})[score])])],
            rows));
  });
}

function samplesTable(samples) {
  const fields = [...new Set(samples.flatMap(sample => Object.keys(sample || {})))];
  return table(
    fields.map(field => [field, sample => h("span", {class: "sample"}, sample[field] ?? "—")]),
    samples, {empty: "The model wrote no samples."});
}

function timelineItem(event) {
  return h("li", {"data-kind": event.kind, "data-event-id": event.id},
    h("time", {class: "when", datetime: event.created_at, title: fmtTime(event.created_at)},
      new Date(event.created_at).toLocaleTimeString()),
    " ", h("span", {class: "kind"}, event.kind), " ", event.message);
}

/** Appends `item`, keeping the newest in view if the list was scrolled to its end. */
function appendKeepingBottom(list, item) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 8;
  list.append(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
}
