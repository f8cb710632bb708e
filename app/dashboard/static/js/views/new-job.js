// A new job: start from the API's own example spec of a task (the request examples of
// POST /v1/jobs in /openapi.json), fill in the datasets and the model, edit the JSON freely,
// dry-run it and submit it. The form's controls rewrite only their own fields of the JSON, so
// the person's other edits stay.
import {api} from "../api.js";
import {errorBox, fmtNumber, h, replace} from "../dom.js";
import {dryRunReport} from "./dry-run-report.js";

const POLL_MS = 1000;
const DEFAULT_VALIDATION_SPLIT = 0.1;
const PAGE = 100;
const CHECKING = {
  sent: " Checking… a worker loads the data and the model's shapes.",
  pending: " Checking… waiting for a worker to take the dry run.",
  running: " Checking… a worker is loading the data and the model's shapes.",
};

let examplesOnce = null;

/** task → {summary, spec}: the example of each task, fetched once per page load. */
function jobExamples() {
  examplesOnce ||= api("/openapi.json").then(document => {
    const {examples} = document.paths["/v1/jobs"].post.requestBody.content["application/json"];
    return new Map(Object.values(examples).map(({summary, value}) =>
      [value.task, {summary, spec: value}]));
  }).catch(error => {
    examplesOnce = null;
    throw error;
  });
  return examplesOnce;
}

async function allDatasets(signal) {
  const datasets = [];
  for (let page = {has_more: true}; page.has_more;) {
    page = await api("/v1/datasets", {query: {limit: PAGE, after: datasets.at(-1)?.id}, signal});
    datasets.push(...page.data);
  }
  return datasets;
}

export default async function newJobView(main, {signal}) {
  const [examples, datasets] = await Promise.all([jobExamples(), allDatasets(signal)]);
  const byId = new Map(datasets.map(dataset => [dataset.id, dataset]));
  // The fields a dataset's layout names for a task: the train select swaps them.
  const fitFields = new Set(datasets.flatMap(dataset =>
    Object.values(dataset.fits || {}).flatMap(Object.keys)));
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("dataset");
  const firstTrain = byId.get(wanted) || datasets[0];
  const firstTask = Object.keys(firstTrain?.fits || {}).find(task => examples.has(task))
    || examples.keys().next().value;

  let edited = false;  // the person typed in the spec since it was last started from an example
  let modelTouched = false;  // the person chose a model: a new task's example keeps it
  const datasetOptions = datasets.map(dataset => h("option", {value: dataset.id},
    `${dataset.name} (${dataset.format}, ${fmtNumber(dataset.num_rows)} rows)`));
  const train = h("select", {id: "train-dataset", on: {change: () => {
    edit(spec => setTrain(spec, byId.get(train.value), task.value));
    describeFit();
  }}}, datasetOptions.map(option => option.cloneNode(true)));
  const validation = h("select", {id: "validation-dataset", on: {change: () =>
    edit(spec => setValidation(spec, validation.value))}},
  h("option", {value: ""}, "none — split from train"), datasetOptions);
  const task = h("select", {id: "task", on: {change: changeTask}},
    [...examples.keys()].map(name => h("option", {value: name}, name)));
  const summary = h("p", {id: "task-summary", class: "muted"});
  const model = h("input", {type: "text", id: "model", list: "model-options",
    autocomplete: "off", spellcheck: "false", on: {input: () => {
      modelTouched = true;
      edit(spec => { spec.model = model.value.trim(); });
    }}});
  const models = h("datalist", {id: "model-options"}, [...new Set([...examples.values()]
    .map(example => example.spec.model))].map(name => h("option", {value: name})));
  const fitNote = h("p", {id: "fit-note", class: "muted"});
  const editor = h("textarea", {id: "spec-editor", spellcheck: "false", rows: "22",
    "aria-label": "job spec (JSON)", on: {input: () => {
      edited = true;
      const spec = readSpec();
      if (spec) syncControls(spec);
    }}});
  const specError = h("div", {id: "spec-error", role: "alert"});
  const dryRunButton = h("button", {type: "button", id: "dry-run", on: {click: dryRun}},
    "Dry run");
  const submitButton = h("button", {type: "button", id: "submit-job", class: "primary",
    on: {click: submit}}, "Submit job");
  const submitError = h("div", {id: "submit-error"});
  const report = h("div", {id: "dry-run-report", "data-state": "empty"},
    h("p", {class: "muted"}, "A dry run loads the data and the model's shapes on a worker ",
      "and reports rows, labels, token lengths, steps, memory and time, without training."));

  replace(main, h("div", {class: "page-head"}, h("h1", {}, "New job")),
    datasets.length ? null : h("p", {class: "warning-box", id: "no-datasets"},
      "There are no datasets yet: ", h("a", {href: "#/datasets"}, "upload one"), " first."),
    wanted && !byId.has(wanted) ? h("p", {class: "warning-box"},
      `There is no dataset ${wanted}: choose one below.`) : null,
    h("div", {class: "card new-job"},
      h("div", {class: "job-fields"},
        field("train-dataset", "Training data", train),
        field("validation-dataset", "Validation data", validation),
        field("task", "Task", task, summary),
        field("model", "Model", model, models)),
      fitNote,
      h("label", {for: "spec-editor"}, "Job spec (JSON)"), editor, specError,
      h("div", {class: "actions spec-actions"}, dryRunButton, submitButton), submitError),
    h("section", {class: "card"}, h("h2", {}, "Dry run"), report));

  if (firstTrain) train.value = firstTrain.id;
  task.value = firstTask;
  startFrom(firstTask);

  /** The example of `name`, with the form's datasets and (a typed) model. */
  function startFrom(name) {
    const example = examples.get(name);
    const spec = structuredClone(example.spec);
    if (modelTouched) spec.model = model.value.trim();
    else model.value = spec.model;
    spec.dataset ||= {};
    if (train.value) setTrain(spec, byId.get(train.value), name);
    setValidation(spec, validation.value);
    write(spec);
    edited = false;
    replace(summary, example.summary);
    describeFit();
  }

  function changeTask() {
    if (!edited || confirm(`Start from the example spec of ${task.value}? OK replaces your ` +
                           "edits to the spec; Cancel changes only its task.")) {
      startFrom(task.value);
      return;
    }
    edit(spec => { spec.task = task.value; });
    replace(summary, examples.get(task.value).summary);
    describeFit();
  }

  function describeFit() {
    const dataset = byId.get(train.value);
    if (!dataset) return replace(fitNote);
    const fits = dataset.fits || {};
    replace(fitNote, task.value in fits
      ? `${dataset.name} fits ${task.value}: its columns are read from its layout.`
      : `${dataset.name} does not fit ${task.value} under the default column names; name its ` +
        `columns in the spec (it has: ${dataset.columns.map(column => column.name)
          .join(", ")}).`);
  }

  /** A dataset that fits the task brings its own column fields in place of the spec's. */
  function setTrain(spec, dataset, taskName) {
    spec.dataset = {...spec.dataset, train: dataset.id};
    const fields = dataset.fits?.[taskName];
    if (!fields) return;
    for (const key of Object.keys(spec.dataset)) {
      if (key.endsWith("_column") || fitFields.has(key)) delete spec.dataset[key];
    }
    Object.assign(spec.dataset, fields);
  }

  function setValidation(spec, id) {
    spec.dataset = {...spec.dataset};
    if (id) {
      spec.dataset.validation = id;
      delete spec.dataset.validation_split;
    } else {
      delete spec.dataset.validation;
      spec.dataset.validation_split ??= DEFAULT_VALIDATION_SPLIT;
    }
  }

  function write(spec) {
    editor.value = JSON.stringify(spec, null, 2);
    readSpec();
  }

  /** Applies `change` to the spec in the editor, unless the person's JSON does not parse. */
  function edit(change) {
    const spec = readSpec();
    if (!spec) return;
    change(spec);
    write(spec);
  }

  /** The editor's spec, or null with the reason shown under it. */
  function readSpec() {
    let spec, problem = null;
    try {
      spec = JSON.parse(editor.value);
      if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
        problem = "The spec must be a JSON object: {\"task\": …, \"model\": …, \"dataset\": …}.";
      }
    } catch (error) {
      problem = `The spec is not valid JSON: ${error.message}. Fix it to dry-run or submit; ` +
        "the controls above change it again once it parses.";
    }
    replace(specError, problem ? h("p", {class: "error-box"}, problem) : null);
    editor.setAttribute("aria-invalid", String(Boolean(problem)));
    dryRunButton.disabled = submitButton.disabled = Boolean(problem);
    return problem ? null : spec;
  }

  /** The controls follow what the person typed, where it names something they offer. */
  function syncControls(spec) {
    const dataset = spec.dataset || {};
    const choose = (select, value) => {
      if ([...select.options].some(option => option.value === value)) select.value = value;
    };
    choose(task, spec.task);
    choose(train, dataset.train);
    choose(validation, dataset.validation || "");
    if (typeof spec.model === "string" && spec.model !== model.value.trim()) {
      model.value = spec.model;
      modelTouched = true;
    }
    replace(summary, examples.get(task.value)?.summary || "");
    describeFit();
  }

  async function dryRun() {
    const spec = readSpec();
    if (!spec) return;
    dryRunButton.disabled = true;
    showChecking("sent");
    try {
      let answer = await api("/v1/jobs/validate", {method: "POST", body: spec, signal});
      while (answer.status !== "done") {
        showChecking(answer.status);
        await new Promise(resolve => setTimeout(resolve, POLL_MS));
        if (signal.aborted) return;
        answer = await api(answer.url, {signal});
      }
      report.dataset.state = "done";
      replace(report, dryRunReport(answer.report));
    } catch (error) {
      if (signal.aborted) return;
      report.dataset.state = "refused";
      replace(report, errorBox(error, "The dry run was refused"));
    } finally {
      dryRunButton.disabled = false;
      dryRunButton.textContent = "Dry run";
    }
  }

  function showChecking(status) {
    report.dataset.state = "checking";
    dryRunButton.textContent = "Checking…";
    replace(report, h("p", {class: "checking"}, h("progress", {"aria-label": "checking"}),
      CHECKING[status] || CHECKING.sent));
  }

  async function submit() {
    const spec = readSpec();
    if (!spec) return;
    submitButton.disabled = true;
    replace(submitError);
    try {
      const job = await api("/v1/jobs", {method: "POST", body: spec, signal});
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      if (!signal.aborted) replace(submitError, errorBox(error, "The job was refused"));
    } finally {
      submitButton.disabled = false;
    }
  }
}

function field(id, label, control, ...after) {
  return h("div", {class: "field"}, h("label", {for: id}, label), control, after);
}
