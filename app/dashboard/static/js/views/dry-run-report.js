// The report of a dry run (POST /v1/jobs/validate): the verdict, errors and warnings, then one
// card per section the worker got to. A dry run that an error stopped early has fewer
// sections, so each is drawn only when it is there.
import {errorBox, fmtBytes, fmtDuration, fmtNumber, h, keyValues, section, table} from "../dom.js";

export function dryRunReport(report) {
  const cards = [
    report.dataset && datasetCard(report.dataset),
    report.dataset && labelsCard(report.dataset),
    report.tokens && tokensCard(report.tokens),
    report.steps && stepsCard(report.steps),
    report.parameters && parametersCard(report.parameters),
    report.memory && memoryCard(report.memory),
    report.time && timeCard(report.time),
  ].filter(Boolean);
  return h("div", {class: "report", "data-valid": String(report.valid)},
    h("p", {id: "report-verdict", class: report.valid ? "verdict ok" : "verdict bad"},
      report.valid ? "Valid: submitted as it is, the job would start."
        : "Not valid: the job would fail."),
    report.errors.map(problem => withCode(errorBox(problem, "Error"), problem.code)),
    report.warnings.map(warningBox),
    cards.length ? h("div", {class: "grid"}, cards) : null,
    report.spec ? h("details", {id: "report-spec"},
      h("summary", {}, "The spec with every default filled in"),
      h("pre", {}, JSON.stringify(report.spec, null, 2))) : null);
}

function withCode(box, code) {
  box.dataset.code = code;
  return box;
}

function warningBox(problem) {
  return h("div", {class: "warning-box", role: "status", "data-code": problem.code},
    h("strong", {}, "Warning"), h("code", {class: "code"}, problem.code),
    h("p", {}, problem.message), problem.hint ? h("p", {class: "hint"}, problem.hint) : null);
}

function card(id, title, ...children) {
  const element = section(title, ...children);
  element.id = id;
  return element;
}

/** [label, value] pairs for the keys of `data` that are there; `format` defaults to numbers. */
function present(data, fields) {
  return fields.filter(([, key]) => data[key] !== undefined && data[key] !== null)
    .map(([label, key, format = fmtNumber]) => [label, format(data[key])]);
}

const percent = share => `${Number((share * 100).toFixed(1))}%`;
const yesNo = value => (value ? "yes" : "no");
const seconds = value => (value < 1 ? `${Number(value.toPrecision(2))}s` : fmtDuration(value));
const stats = lengths => ["mean", "p95", "max"]
  .filter(name => lengths[name] !== undefined).map(name => `${name} ${fmtNumber(lengths[name])}`)
  .join(" · ");

function datasetCard(dataset) {
  return card("report-dataset", "Rows",
    table([["File", ([role]) => role],
      ["Read", ([, counts]) => fmtNumber(counts.rows_read)],
      ["Dropped", ([, counts]) => fmtNumber(counts.rows_dropped)],
      ["Usable", ([, counts]) => fmtNumber(counts.rows_usable)]],
    Object.entries(dataset.files || {}), {rowProps: ([role]) => ({"data-role": role})}),
    h("h3", {}, "Rows per split"),
    keyValues(Object.entries(dataset.splits || {}).map(([split, rows]) =>
      [split, fmtNumber(rows)])));
}

/** A count per label and split, each with a meter of its share of the split. */
function labelsCard(dataset) {
  const splits = Object.entries(dataset.label_distribution || {})
    .filter(([, counts]) => counts);
  if (!splits.length) return null;
  const labels = dataset.label_names && dataset.label_names.length ? dataset.label_names
    : [...new Set(splits.flatMap(([, counts]) => Object.keys(counts)))];
  const totals = Object.fromEntries(splits.map(([split, counts]) =>
    [split, Object.values(counts).reduce((sum, count) => sum + count, 0)]));
  return card("report-labels", "Labels", table([["Label", label => label],
    ...splits.map(([split, counts]) => [split, label => {
      const count = counts[label] || 0;
      return shareOf(fmtNumber(count), totals[split] ? count / totals[split] : 0,
        `${label} in ${split}`);
    }])], labels, {rowProps: label => ({"data-label": label})}));
}

/** A value with its share of a whole, as text and as a meter under it. */
function shareOf(text, share, label) {
  return h("span", {class: "share"}, `${text} (${percent(share)})`,
    h("meter", {min: "0", max: "1", value: share, "aria-label": label}));
}

function tokensCard(tokens) {
  const truncated = tokens.truncated_share;
  return card("report-tokens", "Token lengths",
    keyValues([
      ...present(tokens, [["Rows sampled", "sample_rows"], ["max_seq_length", "max_seq_length"],
        ["Row lengths", "rows", stats], ["Fed to the model", "features", stats],
        ["Tokens per epoch", "tokens_per_epoch"]]),
      truncated !== undefined && truncated !== null && ["Truncated", h("span",
        {class: "share", id: "report-truncated"}, percent(truncated),
        // The worker warns from 40% on: the meter turns to its warning colour there.
        h("meter", {min: "0", max: "1", low: "0.1", high: "0.4", optimum: "0",
          value: truncated, "aria-label": "share of rows truncated"}))],
    ]));
}

function stepsCard(steps) {
  return card("report-steps", "Steps", keyValues(present(steps, [
    ["Total steps", "total_steps"], ["Steps per epoch", "steps_per_epoch"],
    ["Epochs", "epochs"], ["Warmup steps", "warmup_steps"],
    ["Batches per epoch", "batches_per_epoch"], ["Effective batch size", "effective_batch_size"],
    ["Training features", "train_features"], ["Ranks", "ranks"]])));
}

function parametersCard(parameters) {
  return card("report-parameters", "Parameters", keyValues(present(parameters, [
    ["Architecture", "architecture", String], ["Total", "total"], ["Trainable", "trainable"],
    ["Trainable share", "trainable_share", percent], ["LoRA", "lora", yesNo]])));
}

/** The total, then each part (every `*_bytes` the worker reports) against it. */
function memoryCard(memory) {
  const parts = Object.entries(memory)
    .filter(([key, bytes]) => key.endsWith("_bytes") && key !== "total_bytes" && bytes);
  return card("report-memory", memory.estimate ? "Memory (estimate)" : "Memory",
    h("p", {class: "big"}, fmtBytes(memory.total_bytes)),
    table([["Part", ([key]) => key.replace(/_bytes$/, "").replaceAll("_", " ")],
      ["Size", ([key, bytes]) => shareOf(fmtBytes(bytes), bytes / memory.total_bytes, key)]],
    parts, {rowProps: ([key]) => ({"data-part": key})}),
    keyValues([
      ...present(memory, [["Precision", "precision", String],
        ["Optimizer", "optimizer", String], ["Batch size", "batch_size"],
        ["Longest sequence", "sequence_length"], ["Ranks", "ranks"],
        ["Distributed", "distributed", String], ["Quantization", "quantization", String],
        ["Gradient checkpointing", "gradient_checkpointing", yesNo]]),
    ]));
}

function timeCard(time) {
  const device = [time.device, time.device_name].filter(Boolean).join(", ");
  return card("report-time", time.estimate ? "Time (estimate)" : "Time",
    time.seconds_total !== undefined ? h("p", {class: "big"}, seconds(time.seconds_total))
      : null,
    keyValues([
      ...present(time, [["Per epoch", "seconds_per_epoch", seconds]]),
      device && ["Device", device],
      ...present(time, [["Precision", "precision", String],
        ["Utilization assumed", "utilization_assumed", percent],
        ["FLOPs per epoch", "flops_per_epoch", value => value.toExponential(2)]]),
    ]));
}
