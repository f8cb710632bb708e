// Live curves of a job's metric series against the training step, drawn with uPlot. Points
// arrive one at a time from the job's stream (hundreds a second while it replays the past), so
// a chart only records them and redraws at most every REDRAW_MS. Colours come from the page's
// CSS variables, read again when the system switches between light and dark; each plot
// follows its box's width, so a phone gets narrow curves rather than a scrolling strip.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import {fmtNumber, h, replace} from "./dom.js";

const REDRAW_MS = 250;
const PALETTE = ["--accent", "--ok", "--wait", "--danger", "--stop"];
const DARK = window.matchMedia("(prefers-color-scheme: dark)");

/**
 * A chart in `container` for each series name given to add(name, step, value): one plot of
 * `height` px, or with `split`, one small captioned plot per name. The container's
 * `data-points` says how many points are drawn. Everything stops when `signal` aborts.
 */
export function metricChart(container, {signal, split = false, height = 220, color = PALETTE[0],
                                        empty = "No points yet."}) {
  const plots = new Map();
  let timer = null;
  container.setAttribute("data-points", "0");
  replace(container, h("p", {class: "muted empty"}, empty));

  const resizer = new ResizeObserver(entries => {
    for (const {target} of entries) {
      const plot = [...plots.values()].find(candidate => candidate.box === target);
      if (plot && plot.uplot) plot.uplot.setSize({width: plotWidth(plot), height: plot.height});
    }
  });
  const restyle = () => {
    for (const plot of plots.values()) destroyPlot(plot);
    draw();
  };
  DARK.addEventListener("change", restyle);
  signal.addEventListener("abort", () => {
    clearTimeout(timer);
    resizer.disconnect();
    DARK.removeEventListener("change", restyle);
    for (const plot of plots.values()) destroyPlot(plot);
  });

  function draw() {
    timer = null;
    if (signal.aborted) return;
    let drawn = 0;
    for (const plot of plots.values()) {
      const steps = [...plot.values.keys()].sort((a, b) => a - b);
      const data = [steps, steps.map(step => plot.values.get(step))];
      if (plot.uplot) plot.uplot.setData(data);
      else plot.uplot = new uPlot(plotOptions(plot), data, plot.box);
      drawn += steps.length;
    }
    container.setAttribute("data-points", String(drawn));
  }

  function plotFor(name) {
    const key = split ? name : "";
    if (!plots.has(key)) {
      if (!plots.size) container.replaceChildren();
      const box = h("div", {class: "chart-plot"});
      container.append(split ? h("figure", {class: "chart-figure", "data-series": name},
        h("figcaption", {}, name), box) : box);
      const plotColor = split ? PALETTE[plots.size % PALETTE.length] : color;
      plots.set(key, {name, box, color: plotColor, height, values: new Map(), uplot: null});
      resizer.observe(box);
    }
    return plots.get(key);
  }

  return {
    /** Records a point; a step logged again (a retry resumed from a checkpoint) replaces it. */
    add(name, step, value) {
      if (typeof value !== "number" || !isFinite(value)) return;
      plotFor(name).values.set(step, value);
      if (timer === null) timer = setTimeout(draw, REDRAW_MS);
    },
  };
}

function destroyPlot(plot) {
  if (plot.uplot) plot.uplot.destroy();
  plot.uplot = null;
}

function plotWidth(plot) {
  return Math.max(120, plot.box.clientWidth);
}

function plotOptions(plot) {
  const style = getComputedStyle(document.documentElement);
  const css = name => style.getPropertyValue(name).trim();
  const axis = {stroke: css("--muted"), grid: {stroke: css("--line"), width: 1},
                ticks: {stroke: css("--line"), width: 1}};
  return {
    width: plotWidth(plot),
    height: plot.height,
    scales: {x: {time: false}},
    series: [
      {label: "step", value: (u, step) => (step === null ? "—" : fmtNumber(step))},
      {label: plot.name, stroke: css(plot.color), width: 2, spanGaps: true,
       value: (u, value) => fmtNumber(value)},
    ],
    axes: [
      {...axis, values: (u, ticks) => ticks.map(tick => (Number.isInteger(tick) ? tick : ""))},
      {...axis, size: axisWidth, values: (u, ticks) => ticks.map(tick => fmtNumber(tick, 3))},
    ],
  };
}

// Wide enough for the longest tick label (a learning rate like 0.000279), no wider.
function axisWidth(u, labels) {
  const longest = Math.max(3, ...(labels || []).map(label => String(label).length));
  return 16 + longest * 7;
}
