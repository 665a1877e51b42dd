// The dashboard's only script (served from the binary, no dependencies). Pages work
// without it; with it, a job's page follows the job live and the Convert page sends files.
(function () {
  "use strict";

  // --- a job's page: status and percent of each task while the job runs, about every
  // second; the embedded server answers at once when the job changes (?wait=1) ----------
  var table = document.querySelector("[data-progress]");
  if (table) {
    var url = table.getAttribute("data-progress") + "?wait=1";
    var setStatus = function (el, status) {
      if (!el) return;
      el.textContent = status;
      el.className = "status " + status;
    };
    var tick = function () {
      var began = Date.now();
      fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
        .then(function (r) {
          // Signed out, no longer allowed, or the job deleted: the page says which.
          if (r.status === 401 || r.status === 403 || r.status === 404) { window.location.reload(); return null; }
          return r.ok ? r.json() : undefined;
        })
        .then(function (job) {
          if (job === null) return;
          if (!job) { setTimeout(tick, 3000); return; }
          setStatus(document.getElementById("job-status"), job.status);
          job.tasks.forEach(function (t) {
            var row = table.querySelector('tr[data-task="' + CSS.escape(t.name) + '"]');
            if (!row) return;
            setStatus(row.querySelector('[data-field="status"]'), t.status);
            var bar = row.querySelector("progress");
            if (bar) bar.value = t.percent;
            var pct = row.querySelector('[data-field="percent"]');
            if (pct) pct.textContent = t.percent + " %";
          });
          // Ended: the page again, now with its results (links, errors, times).
          // A second between requests, less what the server waited for a change.
          if (job.final) { window.location.reload(); } else { setTimeout(tick, Math.max(0, 1000 - (Date.now() - began))); }
        })
        .catch(function () { setTimeout(tick, 3000); });
    };
    tick();
  }

  // --- the Convert page ----------------------------------------------------------------
  var form = document.getElementById("convert");
  if (!form) return;
  var table_ = JSON.parse(document.getElementById("conversions").textContent);
  var file = document.getElementById("file");
  var output = document.getElementById("output_format");
  var drop = document.getElementById("drop");
  var state = document.getElementById("convert-state");
  var allOutputs = Array.prototype.map.call(output.options, function (o) { return o.value; });

  var inputFormat = function () {
    var f = file.files && file.files[0];
    if (!f) return null;
    var name = f.name.toLowerCase();
    if (name.endsWith(".tar.gz")) return "tar.gz";
    var dot = name.lastIndexOf(".");
    return dot < 0 ? null : name.slice(dot + 1);
  };
  // The formats the chosen file converts to, and the options that conversion takes.
  var refresh = function () {
    var input = inputFormat();
    var outputs = input && table_[input] ? Object.keys(table_[input]) : (input ? [] : allOutputs);
    var chosen = output.value;
    output.innerHTML = "";
    outputs.forEach(function (name) {
      var o = document.createElement("option");
      o.value = name; o.textContent = name;
      if (name === chosen) o.selected = true;
      output.appendChild(o);
    });
    if (input && outputs.length === 0) {
      state.textContent = "Nothing here converts ." + input + " files (see /v2/core/formats).";
    } else {
      state.textContent = "";
    }
    var takes = input && table_[input] && table_[input][output.value] ? table_[input][output.value] : null;
    document.querySelectorAll("[data-option]").forEach(function (el) {
      var shown = !takes || takes.indexOf(el.getAttribute("data-option")) >= 0;
      el.hidden = !shown;
      el.querySelector("input").disabled = !shown;
    });
  };
  file.addEventListener("change", refresh);
  output.addEventListener("change", refresh);

  ["dragenter", "dragover"].forEach(function (ev) {
    drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (ev) {
    drop.addEventListener(ev, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) {
      file.files = e.dataTransfer.files;
      refresh();
    }
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var f = file.files && file.files[0];
    if (!f) { state.textContent = "Pick a file first."; return; }
    var fields = new URLSearchParams();
    fields.set("filename", f.name);
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.name && el.name !== "file" && !el.disabled && el.value) fields.set(el.name, el.value);
    });
    form.querySelector("button[type=submit]").disabled = true;
    state.textContent = "Creating the job…";
    fetch(form.action, { method: "POST", credentials: "same-origin", body: fields })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (answer) {
        if (!answer.ok) throw new Error(answer.body.message || "the job was refused");
        var job = answer.body;
        // The upload task's form, as any API client sends it: its parameters, then the file.
        var data = new FormData();
        Object.keys(job.form.parameters || {}).forEach(function (k) { data.append(k, job.form.parameters[k]); });
        data.append("file", f, f.name);
        var xhr = new XMLHttpRequest();
        xhr.open("POST", job.form.url);
        xhr.upload.onprogress = function (p) {
          if (p.lengthComputable) state.textContent = "Sending the file: " + Math.round(100 * p.loaded / p.total) + " %";
        };
        // A store on another origin (S3) may not let the page read its answer: the job's
        // page says whether the file arrived.
        var next = function () { window.location.href = job.page; };
        xhr.onload = next;
        xhr.onerror = next;
        xhr.send(data);
      })
      .catch(function (err) {
        state.textContent = err.message;
        form.querySelector("button[type=submit]").disabled = false;
      });
  });
  refresh();
})();
