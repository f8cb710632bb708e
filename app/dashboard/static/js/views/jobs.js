// The jobs of the project, newest first, filtered by status; rows follow the project's
// stream of status changes, and running rows refresh their progress every few seconds.
import {api, follow} from "../api.js";
import {elapsed, fmtDuration, fmtTime, h, progressBar, replace, statusBadge, table} from "../dom.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];
const PAGE = 50;
const PROGRESS_REFRESH_MS = 3000;

export default async function jobsView(main, {signal}) {
  const status = new URLSearchParams(location.hash.split("?")[1] || "").get("status") || "";
  const filter = h("select", {id: "status-filter", "aria-label": "status", on: {change: () => {
    location.hash = filter.value ? `#/jobs?status=${filter.value}` : "#/jobs";
  }}}, STATUSES.map(value => h("option", {value, selected: value === status},
    value || "all statuses")));
  const list = h("div", {id: "jobs"});
  replace(main, h("div", {class: "page-head"}, h("h1", {}, "Jobs"), filter,
    h("a", {class: "btn primary", href: "#/new"}, "New job")), list);

  const jobs = new Map();
  const draw = () => replace(list, jobsTable([...jobs.values()]
    .filter(job => !status || job.status === status)
    .sort((a, b) => b.created_at.localeCompare(a.created_at))));
  const page = await api("/v1/jobs", {query: {limit: PAGE, status}, signal});
  for (const job of page.data) jobs.set(job.id, job);
  draw();

  const refresh = async id => {
    jobs.set(id, await api(`/v1/jobs/${id}`, {signal}));
    draw();
  };
  const timer = setInterval(() => {
    for (const job of jobs.values()) if (job.status === "running") refresh(job.id).catch(() => {});
  }, PROGRESS_REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
  follow("/v1/jobs", {signal, onMessage: (name, change) => {
    if (name === "job") refresh(change.id).catch(() => {});
  }}).catch(() => {});
}

function jobsTable(jobs) {
  return table([
    ["Job", job => h("a", {href: `#/jobs/${job.id}`, class: "job-link", title: job.id},
      job.name || `${job.id.slice(0, 12)}…`)],
    ["Status", job => statusBadge(job.status)],
    ["Task", job => job.spec.task],
    ["Model", job => h("span", {class: "mono"}, job.spec.model)],
    ["Progress", job => progressBar(job.progress, job.status)],
    ["Created", job => fmtTime(job.created_at)],
    ["Duration", job => fmtDuration(elapsed(job.started_at, job.finished_at))],
  ], jobs, {empty: "No jobs yet: start one from New job.",
            rowProps: job => ({"data-job-id": job.id})});
}
