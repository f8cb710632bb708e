// Sign in with an API key: checked against the API before it is kept for this tab.
import {api, session} from "../api.js";
import {errorBox, h, replace} from "../dom.js";

export default async function signIn(main) {
  const key = h("input", {type: "password", id: "api-key", name: "api-key",
    autocomplete: "off", placeholder: "ftk_…", spellcheck: "false"});
  const problem = h("div", {id: "sign-in-error"});
  const form = h("form", {id: "sign-in", class: "card narrow", on: {submit: async event => {
    event.preventDefault();
    replace(problem);
    const value = key.value.trim();
    try {
      // A server with authentication off (loopback only) answers without a key.
      await api("/v1/jobs", {query: {limit: 1}, key: value});
    } catch (error) {
      replace(problem, errorBox(error, "Sign-in failed"));
      return;
    }
    session.signIn(value);
    window.dispatchEvent(new Event("finetune:signed-in"));
  }}},
  h("h1", {}, "Sign in"),
  h("p", {class: "muted"}, "Use an API key of your project. `finetune up` printed one and ",
    "stored it in var/api-key; an operator makes more with `finetune keys create`. ",
    "The key is kept for this browser tab only."),
  h("label", {for: "api-key"}, "API key"), key,
  h("button", {type: "submit", class: "btn primary"}, "Sign in"), problem);
  replace(main, form);
  key.focus();
}
