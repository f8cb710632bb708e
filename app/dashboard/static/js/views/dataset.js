// One dataset: what inspecting it found (format, layout, columns, the tasks it fits) and its
// first rows, with the way to fine-tune on it.
import {api} from "../api.js";
import {fmtBytes, fmtNumber, fmtTime, h, keyValues, replace, section, table} from "../dom.js";

const PREVIEW_ROWS = 20;

export default async function datasetView(main, {params: [id], signal}) {
  const [dataset, preview] = await Promise.all([
    api(`/v1/datasets/${id}`, {signal}),
    api(`/v1/datasets/${id}/preview`, {query: {limit: PREVIEW_ROWS}, signal}),
  ]);
  replace(main,
    h("p", {class: "crumbs"}, h("a", {href: "#/datasets"}, "← Datasets")),
    h("div", {class: "page-head"}, h("h1", {id: "dataset-name"}, dataset.name),
      h("a", {id: "fine-tune", class: "btn primary", href: `#/new?dataset=${dataset.id}`},
        "Fine-tune on this dataset")),
    h("div", {class: "grid"},
      section("Facts", h("div", {id: "dataset-facts"}, facts(dataset))),
      section("Columns", h("div", {id: "columns"}, columnsTable(dataset.columns)))),
    section(`First ${fmtNumber(preview.rows.length)} of ${fmtNumber(dataset.num_rows)} rows`,
      h("div", {id: "preview"}, previewTable(preview))));
}

function facts(dataset) {
  const details = Object.entries(dataset.layout_details || {});
  const fits = Object.keys(dataset.fits || {});
  return keyValues([
    ["ID", h("span", {class: "mono"}, dataset.id)],
    ["File", dataset.filename],
    ["Format", dataset.source_format && dataset.source_format !== dataset.format
      ? `${dataset.format} (uploaded as ${dataset.source_format})` : dataset.format],
    ["Layout", dataset.layout],
    ...details.map(([name, value]) => [name.replaceAll("_", " "), cellText(value)]),
    ["Rows", fmtNumber(dataset.num_rows)],
    ["Size", fmtBytes(dataset.size_bytes)],
    ["SHA-256", h("span", {class: "mono"}, dataset.sha256)],
    ["Created", fmtTime(dataset.created_at)],
    ["Fits", fits.length ? h("span", {class: "tags"},
      fits.map(task => h("span", {class: "tag", "data-task": task}, task)))
      : "no task under the default column names"],
  ]);
}

/** Name and type, then whatever else the API says of a column. */
function columnsTable(columns) {
  const extra = [...new Set(columns.flatMap(Object.keys))]
    .filter(key => key !== "name" && key !== "type");
  return table([
    ["Name", column => h("span", {class: "mono"}, column.name)],
    ["Type", column => column.type],
    ...extra.map(key => [key.replaceAll("_", " "), column => cellText(column[key])]),
  ], columns, {empty: "No columns were found.",
               rowProps: column => ({"data-column": column.name})});
}

function previewTable(preview) {
  const names = preview.columns.length ? preview.columns.map(column => column.name)
    : [...new Set(preview.rows.flatMap(Object.keys))];
  return table(names.map(name => [name, row => {
    const text = cellText(row[name]);
    return h("span", {class: "cell", title: text}, text);
  }]), preview.rows, {empty: "The dataset has no rows."});
}

function cellText(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
