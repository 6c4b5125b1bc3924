// Tiny inline SVG sparklines: a few series on one shared y scale, gaps where a value is null
// (no figure that second, e.g. no hold taken, so no latency).

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** A fixed-length history: push() drops the oldest beyond `size`. */
export class Ring {
  constructor(size = 60) {
    this.size = size;
    this.values = [];
  }
  push(v) {
    this.values.push(v === undefined ? null : v);
    if (this.values.length > this.size) this.values.shift();
  }
  last() {
    return this.values.length ? this.values[this.values.length - 1] : null;
  }
}

/** The path "M x y L x y …" of one series, starting a new stroke after every gap. */
function pathOf(values, size, width, height, max) {
  const step = width / Math.max(1, size - 1);
  const offset = size - values.length; // right-align: the newest point is at the right edge
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    const x = ((offset + i) * step).toFixed(1);
    const y = (height - 1 - (v / max) * (height - 2)).toFixed(1);
    d += `${pen ? "L" : "M"}${x} ${y} `;
    pen = true;
  });
  return d.trim();
}

/**
 * An <svg> of `series` = [{label, cls, ring}], sharing a y scale from 0 to the largest value.
 * The label says the scale and the newest values, for screen readers and as a tooltip.
 */
export function sparkline(series, { width = 160, height = 40, unit = "" } = {}) {
  const all = series.flatMap((s) => s.ring.values).filter((v) => v !== null && Number.isFinite(v));
  const max = Math.max(...all, 0) || 1; // an all-zero chart still draws a flat line at the bottom
  const size = series[0] ? series[0].ring.size : 60;
  const latest = series.map((s) => `${s.label} ${s.ring.last() === null ? "—" : round(s.ring.last())}${unit}`).join(", ");
  const svg = svgEl("svg", {
    class: "spark",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": `last ${size} s, max ${round(max)}${unit}; now ${latest}`,
    preserveAspectRatio: "none",
  });
  const title = svgEl("title");
  title.textContent = `max ${round(max)}${unit} · now ${latest}`;
  svg.append(title, svgEl("rect", { class: "spark-bg", x: 0, y: 0, width, height }));
  for (const s of series) {
    const d = pathOf(s.ring.values, size, width, height, max);
    if (d) svg.append(svgEl("path", { d, class: `spark-line ${s.cls}`, fill: "none" }));
  }
  return svg;
}

function round(v) {
  return Math.abs(v) >= 10 ? Math.round(v) : Math.round(v * 100) / 100;
}
