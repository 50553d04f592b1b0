// Parse AsyncAPI documents with the official parser (@asyncapi/parser) and print one
// JSON line per file: {"file", "errors": [...], "warnings": [...]}. Exit 1 when any
// document has an error (a diagnostic of severity 0). Used by tests/unit/render/test_asyncapi.py.
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");

async function main(files) {
  const parser = new Parser();
  let failed = false;
  for (const file of files) {
    const { document, diagnostics } = await parser.parse(fs.readFileSync(file, "utf8"), {
      source: file,
    });
    const show = (d) => `${d.code} at ${JSON.stringify(d.path)}: ${d.message}`;
    const errors = diagnostics.filter((d) => d.severity === 0).map(show);
    const warnings = diagnostics.filter((d) => d.severity === 1).map(show);
    if (errors.length || !document) failed = true;
    const summary = document
      ? {
          version: document.version(),
          channels: document.channels().length,
          operations: document.operations().length,
          messages: document.components().messages().length,
        }
      : null;
    console.log(JSON.stringify({ file, errors, warnings, summary }));
  }
  process.exit(failed ? 1 : 0);
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err);
  process.exit(2);
});
