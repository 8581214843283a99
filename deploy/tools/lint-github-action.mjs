// Validates a composite action (action.yml) and a workflow that uses it with
// GitHub's own parser, @actions/workflow-parser (from actions/languageservices,
// the code behind the Actions editor's validation). CISS_NPM is the npm prefix
// it was installed into. Usage: node lint-github-action.mjs action.yml workflow.yml
import { readFileSync } from "node:fs";
import { register } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// The parser imports its JSON schemas without import attributes (it targets
// bundlers); Node wants {type: "json"}. This hook adds it.
register(
  "data:text/javascript," +
    encodeURIComponent(`export async function load(url, context, next) {
      if (url.endsWith(".json")) return next(url, { ...context, importAttributes: { type: "json" } });
      return next(url, context);
    }`),
);

const lib = (p) => import(pathToFileURL(join(process.env.CISS_NPM, "node_modules/@actions/workflow-parser/dist", p)).href);
const { parseAction } = await lib("actions/index.js");
const { parseWorkflow, NoOperationTraceWriter } = await lib("index.js");

function errors(parse, name, content) {
  const result = parse({ name, content }, new NoOperationTraceWriter());
  return result.context.errors.getErrors().map((e) => e.message);
}

function check(kind, parse, file, breakIt) {
  const content = readFileSync(file, "utf8");
  const errs = errors(parse, file, content);
  if (errs.length > 0) {
    console.error(`github: ${file} is not a valid ${kind}:\n  ${errs.join("\n  ")}`);
    process.exit(1);
  }
  const broken = breakIt(content);
  if (broken === content || errors(parse, file, broken).length === 0) {
    console.error(`github: the ${kind} parser accepted a broken ${file}; the validator is not working`);
    process.exit(1);
  }
  console.log(`github: ${file} valid (${kind}, @actions/workflow-parser)`);
}

const [action, workflow] = process.argv.slice(2);
check("action", parseAction, action, (s) => s.replace("\nruns:\n", "\nrun:\n"));
check("workflow", parseWorkflow, workflow, (s) => s.replace("runs-on:", "runs_on:"));
