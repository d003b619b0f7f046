wit_bindgen::generate!({ world: "policy-world", path: "../wit", pub_export_macro: true, export_macro_name: "export_policy_world" });
