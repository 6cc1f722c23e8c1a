// slimbench site: hand-written, no library. Sorts a table.sortable on a header click (numbers by data-sort) and
// filters rows by the text box (input.table-filter) and the selects (data-attr) that name the table.
"use strict";

function cellKey(row, index) {
  const cell = row.cells[index];
  if (!cell) return { num: NaN, text: "" };
  const raw = cell.getAttribute("data-sort");
  return { num: raw === null ? NaN : parseFloat(raw), text: cell.textContent.trim().toLowerCase() };
}

function sortTable(table, th) {
  const index = Array.prototype.indexOf.call(th.parentNode.children, th);
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  th.parentNode.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).map((row, i) => ({ row: row, i: i, key: cellKey(row, index) }));
  rows.sort((a, b) => {
    let order;
    if (!isNaN(a.key.num) && !isNaN(b.key.num)) order = a.key.num - b.key.num;
    else if (isNaN(a.key.num) !== isNaN(b.key.num)) order = isNaN(a.key.num) ? 1 : -1;  // blanks last
    else order = a.key.text < b.key.text ? -1 : a.key.text > b.key.text ? 1 : 0;
    return (ascending ? order : -order) || a.i - b.i;   // stable
  });
  rows.forEach((r) => body.appendChild(r.row));
}

function applyFilters(table) {
  const box = document.querySelector('input.table-filter[data-table="' + table.id + '"]');
  const words = box ? box.value.trim().toLowerCase() : "";
  const selects = document.querySelectorAll('select[data-table="' + table.id + '"]');
  Array.from(table.tBodies[0].rows).forEach((row) => {
    let show = !words || row.textContent.toLowerCase().indexOf(words) >= 0;
    selects.forEach((s) => {
      if (s.value !== "all" && row.getAttribute("data-" + s.getAttribute("data-attr")) !== s.value) show = false;
    });
    row.hidden = !show;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach((table) => {
    table.querySelectorAll("thead th").forEach((th) => {
      th.tabIndex = 0;
      th.classList.add("sort-button");
      th.addEventListener("click", () => sortTable(table, th));
      th.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, th); }
      });
    });
  });
  document.querySelectorAll("input.table-filter, select[data-table]").forEach((control) => {
    const table = document.getElementById(control.getAttribute("data-table"));
    if (!table) return;
    control.addEventListener("input", () => applyFilters(table));
    control.addEventListener("change", () => applyFilters(table));
  });
});
