// The project's datasets, newest first, and the form that uploads one; a finished upload
// opens the new dataset's page.
import {api, uploadDataset} from "../api.js";
import {errorBox, fmtBytes, fmtNumber, fmtTime, h, replace, table} from "../dom.js";

const PAGE = 50;

export default async function datasetsView(main, {signal}) {
  const problem = h("div", {id: "datasets-error"});
  const list = h("div", {id: "datasets"});
  const more = h("button", {type: "button", id: "datasets-more", hidden: true,
    on: {click: () => loadPage().catch(error => replace(problem, errorBox(error)))}},
  "Show more");
  replace(main, h("div", {class: "page-head"}, h("h1", {}, "Datasets"),
    h("a", {class: "btn primary", href: "#/new"}, "New job")),
  uploadForm(signal), problem, list, more);

  const datasets = [];
  const draw = () => replace(list, datasetsTable(datasets, remove));
  const loadPage = async () => {
    const after = datasets.length ? datasets[datasets.length - 1].id : null;
    const page = await api("/v1/datasets", {query: {limit: PAGE, after}, signal});
    datasets.push(...page.data);
    more.hidden = !page.has_more;
    draw();
  };
  const remove = async dataset => {
    if (!confirm(`Delete the dataset ${dataset.name}? Its file is removed for good.`)) return;
    replace(problem);
    try {
      await api(`/v1/datasets/${dataset.id}`, {method: "DELETE", signal});
    } catch (error) {
      replace(problem, errorBox(error, `${dataset.name} was not deleted`));
      return;
    }
    datasets.splice(datasets.indexOf(dataset), 1);
    draw();
  };
  await loadPage();
}

function uploadForm(signal) {
  const file = h("input", {type: "file", id: "upload-file", name: "file", required: true});
  const name = h("input", {type: "text", id: "upload-name", name: "name",
    placeholder: "the file's name", autocomplete: "off"});
  const submit = h("button", {type: "submit", id: "upload-submit", class: "btn primary"},
    "Upload");
  const progress = h("progress", {id: "upload-progress", max: "1", value: 0, hidden: true,
    "aria-label": "upload progress"});
  const problem = h("div", {id: "upload-error"});
  const form = h("form", {id: "upload-form", class: "card", on: {submit: async event => {
    event.preventDefault();
    if (!file.files.length) return;
    replace(problem);
    submit.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    try {
      const dataset = await uploadDataset(file.files[0], {name: name.value.trim(),
        onProgress: share => { progress.value = share; }});
      // An upload is not aborted by leaving the page; it must not pull the person back.
      if (!signal.aborted) location.hash = `#/datasets/${dataset.id}`;
    } catch (error) {
      replace(problem, errorBox(error, "The upload was refused"));
      progress.hidden = true;
    } finally {
      submit.disabled = false;
    }
  }}},
  h("h2", {}, "Upload a dataset"),
  h("p", {class: "muted"}, "CSV, TSV, JSON Lines, JSON, Parquet, CoNLL, SQuAD JSON or a ",
    "Hugging Face Arrow file; its layout is recognised from its columns."),
  h("div", {class: "upload-fields"},
    h("div", {}, h("label", {for: "upload-file"}, "File"), file),
    h("div", {}, h("label", {for: "upload-name"}, "Name (optional)"), name)),
  h("div", {class: "actions upload-actions"}, submit, progress), problem);
  return form;
}

function datasetsTable(datasets, remove) {
  return table([
    ["Name", dataset => h("a", {href: `#/datasets/${dataset.id}`, class: "dataset-link"},
      dataset.name)],
    ["Format", dataset => dataset.format],
    ["Layout", dataset => dataset.layout],
    ["Rows", dataset => fmtNumber(dataset.num_rows)],
    ["Size", dataset => fmtBytes(dataset.size_bytes)],
    ["Created", dataset => fmtTime(dataset.created_at)],
    ["", dataset => h("button", {type: "button", class: "btn danger small dataset-delete",
      "aria-label": `delete ${dataset.name}`, on: {click: () => remove(dataset)}}, "Delete")],
  ], datasets, {empty: "No datasets yet: upload one above.",
                rowProps: dataset => ({"data-dataset-id": dataset.id})});
}
