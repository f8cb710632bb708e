// Building the page from data without ever parsing it as HTML: every string becomes a text
// node or an attribute value, so a dataset named like markup shows as that text.

const FORBIDDEN_PROPS = /^(on|style$|innerHTML$|outerHTML$|srcdoc$)/i;

/** h("a", {href: "#/jobs", class: "btn", on: {click: fn}}, "Jobs", child, [more]) */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (FORBIDDEN_PROPS.test(name)) {
      throw new Error(`h(): ${name} is not allowed; use on: {...} or a CSS class`);
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "hidden"
               || name === "selected" || name === "open") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces what `el` holds with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/** Seconds from `start` to `end` (ISO strings), or to now while `end` is missing. */
export function elapsed(start, end) {
  if (!start) return null;
  return ((end ? new Date(end) : new Date()) - new Date(start)) / 1000;
}

export function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString();
  return Number(value.toPrecision(digits)).toString();
}

export function statusBadge(status) {
  return h("span", {class: `badge status-${status}`, "data-status": status}, status);
}

/** A progress bar with its percent and ETA as text beside it. */
export function progressBar(progress, status) {
  const percent = progress ? progress.percent : 0;
  const eta = progress && progress.eta_seconds && status === "running"
    ? ` · ETA ${fmtDuration(progress.eta_seconds)}` : "";
  return h("span", {class: "progress"},
    h("progress", {max: "100", value: String(percent), "aria-label": "progress"}),
    h("span", {class: "progress-text"}, `${Math.round(percent)}%${eta}`));
}

/** A definition list of [label, value] pairs; values may be nodes. */
export function keyValues(pairs) {
  return h("dl", {class: "kv"}, pairs.filter(Boolean).map(([label, value]) => [
    h("dt", {}, label), h("dd", {}, value ?? "—")]));
}

/** A table of `rows` (objects) with `columns`: [header, row => cell]. */
export function table(columns, rows, {empty = "Nothing here yet.", rowProps} = {}) {
  if (!rows.length) return h("p", {class: "muted empty"}, empty);
  return h("div", {class: "table-wrap"}, h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([header]) => h("th", {scope: "col"}, header)))),
    h("tbody", {}, rows.map(row => h("tr", rowProps ? rowProps(row) : {},
      columns.map(([, cell]) => h("td", {}, cell(row))))))));
}

/** An API error (or any error) as a box with its code, message, the field it names and its
 * hint. */
export function errorBox(error, title = "Error") {
  return h("div", {class: "error-box", role: "alert"},
    h("strong", {}, title), error.code ? h("code", {class: "code"}, error.code) : null,
    h("p", {}, error.message || String(error)),
    error.param ? h("p", {class: "param"}, "Field: ", h("code", {}, error.param)) : null,
    error.hint ? h("p", {class: "hint"}, error.hint) : null);
}

export function section(title, ...children) {
  return h("section", {class: "card"}, h("h2", {}, title), children);
}
