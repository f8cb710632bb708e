import {h, replace} from "../dom.js";
export default async function view(main) { replace(main, h("p", {}, "job: coming")); }
