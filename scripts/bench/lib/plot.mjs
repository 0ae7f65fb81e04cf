// Small standalone SVG charts for the benchmark docs (no plotting dependency), in the style of
// cdfSvg in lab-nodes.mjs: white background, sans-serif 12 px, thin black axes, grey grid lines.

export const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A "nice" axis maximum and step for values up to `v` (1, 2, 2.5, 5 × 10^k steps). */
export function niceScale(v, ticks = 5) {
  if (!(v > 0)) return { max: 1, step: 0.2 };
  const raw = v / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  return { max: Math.ceil(v / step) * step, step };
}

/** Tick label for `v` on an axis stepping by `step` (as many decimals as the step needs). */
function tick(v, step) {
  const e = Math.floor(Math.log10(step) + 1e-9);
  const mantissa = Math.round((step / 10 ** e) * 10) / 10;
  return v.toFixed(Math.max(0, -e + (Number.isInteger(mantissa) ? 0 : 1)));
}

const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3));

/**
 * One grouped bar chart panel as SVG elements, drawn in the box (x0, y0, w, h).
 * panel: { title, yLabel, categories: [names], series: [{ name, values: [{ value, min?, max? } | null] }],
 *          note?, yMax? }. min/max draw a whisker (the spread over runs); values above yMax are clipped
 * and marked with their number.
 */
function panelSvg(panel, x0, y0, w, h) {
  const k = panel.series.length;
  const L = 60, R = 10, T = 34 + (k > 1 ? 16 * k : 0), B = 84;
  const plotW = w - L - R, plotH = h - T - B;
  const top = Math.max(...panel.series.flatMap((s) => s.values.filter(Boolean).map((v) => Math.max(v.value, v.max ?? 0))), 0);
  const { max, step } = niceScale(panel.yMax ?? top);
  const y = (v) => y0 + T + plotH - (Math.min(v, max) / max) * plotH;
  const parts = [
    `<text x="${x0 + w / 2}" y="${y0 + 18}" text-anchor="middle" font-size="13">${esc(panel.title)}</text>`,
    `<text x="${x0 + 14}" y="${y0 + T + plotH / 2}" text-anchor="middle" transform="rotate(-90 ${x0 + 14} ${y0 + T + plotH / 2})">${esc(panel.yLabel)}</text>`,
  ];
  for (let i = 0; i * step <= max + step / 1e6; i++) {
    const v = i * step;
    parts.push(`<line x1="${x0 + L}" y1="${y(v)}" x2="${x0 + w - R}" y2="${y(v)}" stroke="#ddd"/>`,
      `<text x="${x0 + L - 5}" y="${y(v) + 4}" text-anchor="end">${tick(v, step)}</text>`);
  }
  parts.push(`<line x1="${x0 + L}" y1="${y(0)}" x2="${x0 + w - R}" y2="${y(0)}" stroke="black"/>`,
    `<line x1="${x0 + L}" y1="${y0 + T}" x2="${x0 + L}" y2="${y(0)}" stroke="black"/>`);
  const n = panel.categories.length;
  const groupW = plotW / n, barW = Math.min(36, (groupW * 0.8) / k);
  panel.categories.forEach((cat, i) => {
    const gx = x0 + L + i * groupW + (groupW - barW * k) / 2;
    panel.series.forEach((s, j) => {
      const v = s.values[i];
      if (!v) return;
      const bx = gx + j * barW;
      const clipped = v.value > max;
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
  if (k > 1) {
    panel.series.forEach((s, j) => {
      parts.push(`<rect x="${x0 + L + 8}" y="${y0 + 28 + 16 * j}" width="10" height="10" fill="${COLORS[j % COLORS.length]}"/>`,
        `<text x="${x0 + L + 22}" y="${y0 + 37 + 16 * j}">${esc(s.name)}</text>`);
    });
  }
  if (panel.note) parts.push(`<text x="${x0 + w / 2}" y="${y0 + h - 8}" text-anchor="middle" font-size="10" fill="#555">${esc(panel.note)}</text>`);
  return parts;
}

/** Grouped bar chart panels side by side under one title, as a standalone SVG document. */
export function barChartSvg(title, panels, { panelWidth = 470, height = 380, footer } = {}) {
  const W = panelWidth * panels.length, H = height + 30 + (footer ? 18 : 0);
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`];
  panels.forEach((p, i) => parts.push(...panelSvg(p, i * panelWidth, 30, panelWidth, height)));
  if (footer) parts.push(`<text x="${W / 2}" y="${H - 6}" text-anchor="middle" font-size="10" fill="#555">${esc(footer)}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/** CSV text from a header and rows (values with commas or quotes are quoted). */
export function csv(header, rows) {
  const cell = (v) => (typeof v === 'string' && /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : String(v));
  return [header, ...rows].map((r) => r.map(cell).join(',')).join('\n') + '\n';
}

/**
 * Line chart (one polyline per series) as a standalone SVG: series = [{ name, points: [[x, y], ...] }].
 */
export function lineChartSvg(title, xLabel, yLabel, series, { width = 640, height = 400, footer } = {}) {
  const L = 70, R = 20, T = 40 + 16 * series.length, B = 50 + (footer ? 16 : 0);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const xs_ = niceScale(Math.max(...xs, 0)), ys_ = niceScale(Math.max(...ys, 0));
  const x = (v) => L + (v / xs_.max) * (width - L - R);
  const y = (v) => height - B - (v / ys_.max) * (height - T - B);
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`];
  for (let i = 0; i * ys_.step <= ys_.max + ys_.step / 1e6; i++) {
    const v = i * ys_.step;
    parts.push(`<line x1="${L}" y1="${y(v)}" x2="${width - R}" y2="${y(v)}" stroke="#ddd"/>`,
      `<text x="${L - 5}" y="${y(v) + 4}" text-anchor="end">${tick(v, ys_.step)}</text>`);
  }
  for (let i = 0; i * xs_.step <= xs_.max + xs_.step / 1e6; i++) {
    const v = i * xs_.step;
    parts.push(`<text x="${x(v)}" y="${height - B + 16}" text-anchor="middle">${tick(v, xs_.step)}</text>`);
  }
  parts.push(`<line x1="${L}" y1="${height - B}" x2="${width - R}" y2="${height - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${height - B}" stroke="black"/>`,
    `<text x="${(L + width - R) / 2}" y="${height - B + 34}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text x="16" y="${(T + height - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + height - B) / 2})">${esc(yLabel)}</text>`);
  series.forEach((s, k) => {
    const c = COLORS[k % COLORS.length];
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`,
      `<rect x="${L + 8}" y="${30 + 16 * k}" width="10" height="10" fill="${c}"/>`,
      `<text x="${L + 22}" y="${39 + 16 * k}">${esc(s.name)}</text>`);
  });
  if (footer) parts.push(`<text x="${width / 2}" y="${height - 6}" text-anchor="middle" font-size="10" fill="#555">${esc(footer)}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
