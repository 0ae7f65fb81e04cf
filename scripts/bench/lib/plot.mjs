// Small standalone SVG charts for the benchmark report (no plotting dependency): grouped bars with
// whiskers, lines, CDF steps and scatter points. One look for all of them — white background,
// sans-serif 12 px, thin black axes, grey grid lines — drawn by the one frame() below.

export const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

export const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A "nice" axis maximum and step for values up to `v` (1, 2, 2.5, 5 × 10^k steps). */
export function niceScale(v, ticks = 5) {
  if (!(v > 0)) return { max: 1, step: 0.2 };
  const raw = v / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw * (1 - 1e-12));
  return { max: Math.ceil(v / step - 1e-9) * step, step };
}

/** Tick label for `v` on an axis stepping by `step` (as many decimals as the step needs). */
function tick(v, step) {
  const e = Math.floor(Math.log10(step) + 1e-9);
  const mantissa = Math.round((step / 10 ** e) * 10) / 10;
  return v.toFixed(Math.max(0, -e + (Number.isInteger(mantissa) ? 0 : 1)));
}

const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3));

function svgDocument(W, H, title, body, footer) {
  return [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    ...body,
    ...(footer ? [`<text x="${W / 2}" y="${H - 6}" text-anchor="middle" font-size="10" fill="#555">${esc(footer)}</text>`] : []),
    '</svg>'].join('\n') + '\n';
}

/**
 * Axes in the plot area (left, top, right, bottom): grid lines and labels at every step of `yScale`,
 * x tick labels at every step of `xScale` (none without it), both axis lines and their titles.
 * Returns the SVG elements and the value-to-pixel functions x(v), y(v) (values above max clip).
 */
export function frame({ left, top, right, bottom, xScale, yScale, xLabel, yLabel, yLabelX = left - 46 }) {
  const x = xScale ? (v) => left + (v / xScale.max) * (right - left) : null;
  const y = (v) => bottom - (Math.min(v, yScale.max) / yScale.max) * (bottom - top);
  const parts = [];
  for (let i = 0; i * yScale.step <= yScale.max + yScale.step / 1e6; i++) {
    const v = i * yScale.step;
    parts.push(`<line x1="${left}" y1="${y(v)}" x2="${right}" y2="${y(v)}" stroke="#ddd"/>`,
      `<text x="${left - 5}" y="${y(v) + 4}" text-anchor="end">${tick(v, yScale.step)}</text>`);
  }
  if (xScale) {
    for (let i = 0; i * xScale.step <= xScale.max + xScale.step / 1e6; i++) {
      const v = i * xScale.step;
      parts.push(`<text x="${x(v)}" y="${bottom + 16}" text-anchor="middle">${tick(v, xScale.step)}</text>`);
    }
  }
  parts.push(`<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="black"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="black"/>`);
  if (xLabel) parts.push(`<text x="${(left + right) / 2}" y="${bottom + 34}" text-anchor="middle">${esc(xLabel)}</text>`);
  if (yLabel) {
    const mid = (top + bottom) / 2;
    parts.push(`<text x="${yLabelX}" y="${mid}" text-anchor="middle" transform="rotate(-90 ${yLabelX} ${mid})">${esc(yLabel)}</text>`);
  }
  return { parts, x, y };
}

/** Legend entries: one per line from (x, y), or (`row`) side by side on one line. */
function legend(names, x, y, { row = false } = {}) {
  const parts = [];
  let lx = x;
  names.forEach((name, k) => {
    const c = COLORS[k % COLORS.length];
    const ly = row ? y : y + 16 * k;
    parts.push(`<rect x="${lx}" y="${ly}" width="10" height="10" fill="${c}"/>`, `<text x="${lx + 14}" y="${ly + 9}">${esc(name)}</text>`);
    if (row) lx += 30 + 7 * String(name).length; // about 7 px a character at 12 px
  });
  return parts;
}

/**
 * One grouped bar chart panel as SVG elements, drawn in the box (x0, y0, w, h).
 * panel: { title, yLabel, categories: [names], series: [{ name, values: [{ value, min?, max? } | null] }],
 *          note?, yMax? }. min/max draw a whisker (the spread over runs); values above yMax are clipped
 * and marked with their number.
 */
function panelSvg(panel, x0, y0, w, h) {
  const k = panel.series.length;
  const L = 60, R = 10, T = 34 + (k > 1 ? 16 * k : 0), B = 84;
  const top = Math.max(...panel.series.flatMap((s) => s.values.filter(Boolean).map((v) => Math.max(v.value, v.max ?? 0))), 0);
  const yScale = niceScale(panel.yMax ?? top);
  const f = frame({ left: x0 + L, top: y0 + T, right: x0 + w - R, bottom: y0 + h - B, yScale, yLabel: panel.yLabel, yLabelX: x0 + 14 });
  const { y } = f;
  const parts = [`<text x="${x0 + w / 2}" y="${y0 + 18}" text-anchor="middle" font-size="13">${esc(panel.title)}</text>`, ...f.parts];
  const n = panel.categories.length;
  const groupW = (w - L - R) / n, barW = Math.min(36, (groupW * 0.8) / k);
  panel.categories.forEach((cat, i) => {
    const gx = x0 + L + i * groupW + (groupW - barW * k) / 2;
    panel.series.forEach((s, j) => {
      const v = s.values[i];
      if (!v) return;
      const bx = gx + j * barW;
      const clipped = v.value > yScale.max;
      parts.push(`<rect x="${bx + 1}" y="${y(v.value)}" width="${barW - 2}" height="${y(0) - y(v.value)}" fill="${COLORS[j % COLORS.length]}"${clipped ? ' fill-opacity="0.5"' : ''}/>`);
      if (v.min !== undefined && v.max !== undefined && !clipped) {
        const cx = bx + barW / 2;
        parts.push(`<line x1="${cx}" y1="${y(v.min)}" x2="${cx}" y2="${y(v.max)}" stroke="black"/>`,
          `<line x1="${cx - 4}" y1="${y(v.min)}" x2="${cx + 4}" y2="${y(v.min)}" stroke="black"/>`,
          `<line x1="${cx - 4}" y1="${y(v.max)}" x2="${cx + 4}" y2="${y(v.max)}" stroke="black"/>`);
      }
      const label = clipped ? `${fmt(v.value)} ↑` : fmt(v.value);
      parts.push(`<text x="${bx + barW / 2}" y="${(clipped ? y0 + T + 12 : y(v.max ?? v.value) - 4)}" text-anchor="middle" font-size="10">${esc(label)}</text>`);
    });
    const lx = x0 + L + i * groupW + groupW / 2;
    parts.push(`<text x="${lx}" y="${y(0) + 18}" text-anchor="end" transform="rotate(-25 ${lx} ${y(0) + 18})">${esc(cat)}</text>`);
  });
  if (k > 1) parts.push(...legend(panel.series.map((s) => s.name), x0 + L + 8, y0 + 28));
  if (panel.note) parts.push(`<text x="${x0 + w / 2}" y="${y0 + h - 8}" text-anchor="middle" font-size="10" fill="#555">${esc(panel.note)}</text>`);
  return parts;
}

/** Grouped bar chart panels side by side under one title, as a standalone SVG document. */
export function barChartSvg(title, panels, { panelWidth = 470, height = 380, footer } = {}) {
  const W = panelWidth * panels.length, H = height + 30 + (footer ? 18 : 0);
  return svgDocument(W, H, title, panels.flatMap((p, i) => panelSvg(p, i * panelWidth, 30, panelWidth, height)), footer);
}

/** CSV text from a header and rows (values with commas or quotes are quoted). */
export function csv(header, rows) {
  const cell = (v) => (typeof v === 'string' && /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : String(v));
  return [header, ...rows].map((r) => r.map(cell).join(',')).join('\n') + '\n';
}

/**
 * An x/y chart of series = [{ name, points: [[x, y], ...] }] as a standalone SVG, both axes from 0:
 * `mark` 'line' (a polyline per series), 'step' (a staircase per series: a CDF) or 'dot' (points);
 * `yScale` fixes the y axis (e.g. 0..1 for a CDF); the legend sits above the plot, one entry a line
 * or (`legendRow`) side by side.
 */
export function xyChartSvg(title, xLabel, yLabel, series, { mark = 'line', width = 640, height = 400, footer, yScale, legendRow = false } = {}) {
  const legendH = legendRow ? 20 : 16 * series.length;
  const L = 70, R = 20, T = 40 + legendH, B = 50 + (footer ? 16 : 0);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const f = frame({
    left: L, top: T, right: width - R, bottom: height - B, xLabel, yLabel, yLabelX: 16,
    xScale: niceScale(Math.max(...xs, 0)), yScale: yScale ?? niceScale(Math.max(...ys, 0)),
  });
  const parts = [...f.parts];
  const px = (p) => `${f.x(p[0]).toFixed(1)},${f.y(p[1]).toFixed(1)}`;
  series.forEach((s, k) => {
    const c = COLORS[k % COLORS.length];
    if (mark === 'dot') {
      for (const p of s.points) parts.push(`<circle cx="${f.x(p[0]).toFixed(1)}" cy="${f.y(p[1]).toFixed(1)}" r="2.5" fill="${c}"/>`);
    } else {
      const pts = mark === 'step' ? s.points.flatMap((p, i) => (i ? [[p[0], s.points[i - 1][1]], p] : [p])) : s.points;
      parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map(px).join(' ')}"/>`);
    }
  });
  parts.push(...legend(series.map((s) => s.name), L + 8, 30, { row: legendRow }));
  return svgDocument(width, height, title, parts, footer);
}

/** Line chart: one polyline per series (see xyChartSvg). */
export const lineChartSvg = (title, xLabel, yLabel, series, opts = {}) => xyChartSvg(title, xLabel, yLabel, series, { ...opts, mark: 'line' });

/** Scatter plot: one dot per point (see xyChartSvg), the legend in one row. */
export const scatterSvg = (title, xLabel, yLabel, series, opts = {}) => xyChartSvg(title, xLabel, yLabel, series, { legendRow: true, ...opts, mark: 'dot' });

/** Empirical CDFs of series = [{ name, values }]: one staircase per series, y = fraction of samples. */
export function cdfSvg(title, xLabel, series, opts = {}) {
  const steps = series.map((s) => {
    const v = [...s.values].sort((a, b) => a - b);
    return { name: s.name, points: [[0, 0], ...v.map((val, i) => [val, (i + 1) / v.length])] };
  });
  return xyChartSvg(title, xLabel, 'fraction of samples', steps, { ...opts, mark: 'step', yScale: { max: 1, step: 0.25 } });
}
