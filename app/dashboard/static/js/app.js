// The dashboard's shell: sign-in gate, navigation and a hash router. Each view is a module
// whose default export renders into <main> and follows streams until `signal` aborts (on the
// next navigation).
import {session} from "./api.js";
import signInView from "./views/signin.js";
import jobsView from "./views/jobs.js";
import jobView from "./views/job.js";
import datasetsView from "./views/datasets.js";
import datasetView from "./views/dataset.js";
import newJobView from "./views/new-job.js";
import {errorBox, replace} from "./dom.js";

const ROUTES = [
  [/^#\/jobs\/([\w-]+)$/, jobView, "jobs"],
  [/^#\/jobs(?:\?.*)?$/, jobsView, "jobs"],
  [/^#\/datasets\/([\w-]+)$/, datasetView, "datasets"],
  [/^#\/datasets$/, datasetsView, "datasets"],
  [/^#\/new(?:\?.*)?$/, newJobView, "new"],
];

const main = document.getElementById("view");
const nav = document.getElementById("nav");
let current = null;

async function show() {
  if (current) current.abort();
  current = new AbortController();
  const {signal} = current;
  nav.hidden = !session.signedIn();
  if (!session.signedIn()) {
    setActive(null);
    await signInView(main, {signal});
    return;
  }
  const hash = location.hash || "#/jobs";
  const route = ROUTES.find(([pattern]) => pattern.test(hash));
  if (!route) {
    location.replace("#/jobs");
    return;
  }
  const [pattern, view, section] = route;
  setActive(section);
  window.scrollTo(0, 0);
  try {
    await view(main, {params: hash.match(pattern).slice(1), signal});
  } catch (error) {
    if (!signal.aborted) replace(main, errorBox(error, "This page could not be shown"));
  }
}

function setActive(section) {
  for (const link of nav.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  location.hash = "#/jobs";
  show();
});
window.addEventListener("finetune:unauthorized", () => {
  session.signOut();
  show();
});
window.addEventListener("finetune:signed-in", show);
window.addEventListener("hashchange", show);
show();
