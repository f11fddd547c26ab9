"""The report page's static parts: style, explorer markup, script, and the page around
them (`html.build` fills in the sections and the data)."""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1240px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;border-bottom:1px solid #ddd;
padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:5px;text-align:left;vertical-align:top}
th{background:#f6f6f6;position:sticky;top:0}tr.baseline{background:#fafaf0}
.scroll{overflow-x:auto;background:linear-gradient(to right,#fff,#fff0) left/24px 100% local,
linear-gradient(to left,#fff,#fff0) right/24px 100% local,
linear-gradient(to right,#0002,#0000) left/10px 100% scroll,
linear-gradient(to left,#0002,#0000) right/10px 100% scroll;background-repeat:no-repeat}
td.sig.better{background:#e3f4e3}td.sig.worse{background:#f8e1e1}small{color:#666}
.note{color:#555;font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #eee;padding:6px;border-radius:4px}
figcaption{font-size:12px;color:#444}figcaption span{margin-right:10px;white-space:nowrap}
figcaption i{display:inline-block;width:10px;height:10px;margin-right:4px}
svg.chart text{font-size:11px;fill:#333}svg.chart text.title{font-size:13px;font-weight:600}
svg.chart text.pt{font-size:10px}.axis{stroke:#888}.grid{stroke:#eee}
.front{fill:none;stroke:#000;stroke-dasharray:4 3;stroke-width:1}
#explorer select{margin-right:12px}.item{border:1px solid #e4e4e4;border-radius:4px;
margin:10px 0;padding:8px;overflow-wrap:anywhere}.item pre{white-space:pre-wrap;margin:4px 0;
font-size:12px;background:#fafafa;padding:6px}
.pair{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:10px}
"""

EXPLORER = """
<section id="explorer"><h2>Per-sample explorer</h2>
<p>Items where two runs' scores differ (for the eval's per-item scores), with both outputs
and the judge's verdicts.</p>
<label>eval <select id="ex-eval"></select></label>
<label>run A <select id="ex-a"></select></label>
<label>run B <select id="ex-b"></select></label>
<span id="ex-count"></span>
<div id="ex-items"></div></section>
"""

SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('explorer-data').textContent);
  const evalSel = document.getElementById('ex-eval');
  if (!evalSel) return;
  const aSel = document.getElementById('ex-a'), bSel = document.getElementById('ex-b');
  const out = document.getElementById('ex-items'), count = document.getElementById('ex-count');
  const opt = (sel, values) => {
    sel.innerHTML = '';
    values.forEach(v => { const o = document.createElement('option'); o.value = v;
      o.textContent = v; sel.appendChild(o); });
  };
  const el = (tag, text, cls) => { const e = document.createElement(tag);
    if (cls) e.className = cls; e.textContent = text; return e; };
  function runs() {
    const names = Object.keys(data[evalSel.value] || {});
    opt(aSel, names); opt(bSel, names);
    if (names.length > 1) bSel.value = names[1];
    render();
  }
  function side(label, entry) {
    const box = el('div', '');
    box.appendChild(el('strong', label));
    const rec = entry.record || {};
    ['response', 'completion', 'generated', 'other', 'chosen', 'rejected'].forEach(k => {
      if (rec[k]) { box.appendChild(el('div', k, 'note')); box.appendChild(el('pre', rec[k])); }
    });
    Object.keys(rec).filter(k => k.startsWith('verdict')).forEach(k => {
      const raw = rec[k].raw ? ' — ' + rec[k].raw : '';
      box.appendChild(el('div', k + ': ' + rec[k].verdict + raw, 'note'));
    });
    box.appendChild(el('div', 'scores: ' + JSON.stringify(entry.scores), 'note'));
    return box;
  }
  function render() {
    out.innerHTML = '';
    const ev = data[evalSel.value] || {}, A = ev[aSel.value] || {}, B = ev[bSel.value] || {};
    const shared = Object.keys(A).filter(k => k in B);
    const differ = shared.filter(k => JSON.stringify(A[k].scores) !== JSON.stringify(B[k].scores));
    count.textContent = differ.length + ' of ' + shared.length + ' shared items differ';
    differ.slice(0, 100).forEach(k => {
      const item = el('div', '', 'item');
      const rec = A[k].record || {};
      item.appendChild(el('div', 'item ' + k, 'note'));
      if (rec.prompt) item.appendChild(el('pre', rec.prompt));
      const pair = el('div', '', 'pair');
      pair.appendChild(side(aSel.value, A[k])); pair.appendChild(side(bSel.value, B[k]));
      item.appendChild(pair); out.appendChild(item);
    });
  }
  opt(evalSel, Object.keys(data));
  evalSel.addEventListener('change', runs);
  aSel.addEventListener('change', render); bSel.addEventListener('change', render);
  runs();
})();
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body><header><h1>{title}</h1>
<p class="note">{n} row(s) from {root}/ftlab.duckdb, written {created} by ftlab.</p></header>
{body}
<script type="application/json" id="explorer-data">{data}</script>
<script>{script}</script>
</body></html>
"""
