"""The web console's main flows, in a real headless Chromium, against a
real `portcullis up --demo` (tests/e2e/console.rs starts it and runs this).

    python3 tests/python/console_flows.py CONSOLE_URL ADMIN_TOKEN MOCK_URL

Each step reads like what a user does and asserts what they must see.
Screenshots of each page go to $CONSOLE_SCREENSHOTS when it is set
(docs/console/*.png). The browser is Debian's chromium
($CHROMIUM, default /usr/bin/chromium): no `playwright install`.
"""

import json
import os
import re
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

CONSOLE, TOKEN, MOCK = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3].rstrip("/")
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def shot(page, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def api(method, path, body=None, token=TOKEN):
    """The REST API directly, for set-up only (a developer token)."""
    req = urllib.request.Request(
        f"{CONSOLE}/api/v1{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def step(name):
    print(f"== {name}", flush=True)


def sign_in(page, token):
    page.goto(CONSOLE + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    # The token never reaches the URL.
    assert token not in page.url, page.url


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 860})
        page = ctx.new_page()
        page.on("dialog", lambda d: d.accept())
        page.set_default_timeout(15_000)

        step("sign in with the admin token")
        page.goto(CONSOLE + "/")
        expect(page.get_by_role("heading", name="Portcullis")).to_be_visible()
        page.get_by_label("API token").fill("pat-not-a-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("unknown or revoked API token")).to_be_visible()
        shot(page, "signin")
        sign_in(page, TOKEN)
        assert page.evaluate("sessionStorage.getItem('portcullis.token')") == TOKEN
        expect(page.get_by_role("link", name="demo", exact=True)).to_be_visible()
        page.get_by_label("Search proxies").fill("anthropic")
        expect(page.get_by_role("link", name="demo-anthropic")).to_be_visible()
        expect(page.get_by_role("link", name="demo", exact=True)).to_have_count(0)
        page.get_by_label("Search proxies").fill("")
        shot(page, "proxies")

        step("providers: create one, and the 409 of deleting one in use")
        page.get_by_role("link", name="Providers").click()
        page.get_by_role("button", name="Add provider").click()
        page.get_by_label("Type").select_option("openai")
        page.get_by_label("Name").fill("console-openai")
        page.get_by_label("Base URL").fill(f"{MOCK}/v1")
        page.get_by_label("Models").fill("gpt-5-mini, gpt-4o-mini")
        page.get_by_label("API key").fill("mock-key")
        shot(page, "provider-form")
        page.get_by_role("button", name="Create provider").click()
        row = page.get_by_role("row").filter(has_text="console-openai")
        expect(row).to_contain_text("API key: set")
        # The key itself is never shown back.
        expect(page.locator("body")).not_to_contain_text("mock-key")
        page.get_by_role("button", name="Delete mock-openai").click()
        expect(page.get_by_role("alert")).to_contain_text("This provider is still in use")
        shot(page, "providers")

        step("providers: Azure with Entra ID and an alias; admin's 422 on the alias field")
        page.get_by_role("button", name="Add provider").click()
        page.get_by_label("Type").select_option("azure-openai")
        page.get_by_label("Name").fill("console-azure")
        page.get_by_label("Base URL").fill(MOCK)
        page.get_by_label("Authentication").select_option("entra")
        page.get_by_label("Tenant id").fill("contoso")
        page.get_by_label("Client id").fill("portcullis-app")
        page.get_by_label("Client secret").fill("entra-secret")
        page.get_by_label("Aliases").fill("fast=")
        page.get_by_role("button", name="Create provider").click()
        expect(page.get_by_label("Aliases")).to_have_attribute("aria-invalid", "true")
        page.get_by_label("Aliases").fill("fast=gpt-4o-deploy")
        shot(page, "provider-form-entra")
        page.get_by_role("button", name="Create provider").click()
        row = page.get_by_role("row").filter(has_text="console-azure")
        expect(row).to_contain_text("Client secret: set")
        expect(row).to_contain_text("auth: entra")
        expect(row).to_contain_text("fast → gpt-4o-deploy")
        expect(page.locator("body")).not_to_contain_text("entra-secret")
        stored = next(p for p in api("GET", "/providers")["items"] if p["name"] == "console-azure")
        assert stored["auth"] == {"type": "entra", "tenant_id": "contoso", "client_id": "portcullis-app"}, stored
        assert stored["aliases"] == {"fast": "gpt-4o-deploy"}, stored
        assert "client_secret" in stored["credentials_set"], stored

        step("create a proxy with the wizard")
        page.get_by_role("link", name="Proxies").click()
        page.get_by_role("link", name="Create proxy").click()
        page.get_by_label("Name").fill("Console Chat")
        expect(page.get_by_text("Id: console-chat")).to_be_visible()
        page.get_by_label("Description").fill("made in the browser")
        shot(page, "proxy-wizard")
        page.get_by_role("button", name="Next").click()
        page.get_by_label("Provider").select_option("console-openai")
        page.get_by_role("button", name="Next").click()
        expect(page.get_by_text("/console-chat", exact=True)).to_be_visible()
        page.get_by_role("button", name="Create proxy").click()
        expect(page.get_by_role("heading", name="Console Chat")).to_be_visible()
        expect(page.get_by_text("console-openai").first).to_be_visible()
        shot(page, "proxy-overview")

        step("routes tab renders the proxy's route")
        page.get_by_role("link", name="Routes").click()
        expect(page.get_by_label(re.compile(r"^Provider id"))).to_have_value("console-openai")
        shot(page, "proxy-routes")

        step("attach a guardrail through its schema form; a bad value shows the field error")
        page.get_by_role("link", name="Policies", exact=True).click()
        page.get_by_role("button", name="Attach policy").click()
        page.get_by_label("Policy", exact=True).select_option("guardrails")
        status = page.locator("#root_status")
        expect(status).to_be_visible()
        status.fill("200")
        page.get_by_role("button", name="Attach", exact=True).click()
        field = page.locator(".form-group.has-error", has=page.locator("#root_status"))
        expect(field).to_contain_text("minimum of 400")
        shot(page, "policy-field-error")
        status.fill("403")
        # The form is generated from the schema: request.deny_words is an
        # array of strings inside a $ref'd object.
        deny = page.locator("fieldset#root_request_deny_words")
        deny.get_by_role("button", name=re.compile("Add|\\+")).first.click()
        page.locator("#root_request_deny_words_0").fill("forbidden-word")
        page.get_by_role("button", name="Attach", exact=True).click()
        expect(page.get_by_text("1. guardrails@0.1.0")).to_be_visible()
        expect(page.locator(".chain")).to_contain_text("forbidden-word")
        # A second policy, then moved first: the chain's order changes.
        page.get_by_role("button", name="Attach policy").click()
        page.get_by_label("Policy", exact=True).select_option("cache")
        expect(page.locator(".schema-form")).to_be_visible()
        page.get_by_role("button", name="Attach", exact=True).click()
        expect(page.get_by_text("2. cache@0.1.0")).to_be_visible()
        page.get_by_role("button", name="Move cache up").click()
        expect(page.get_by_text("1. cache@0.1.0")).to_be_visible()
        expect(page.get_by_text("2. guardrails@0.1.0")).to_be_visible()
        shot(page, "proxy-policies")

        step("create a key: shown once")
        page.get_by_role("link", name="Keys").click()
        page.get_by_label("Key name").fill("browser")
        page.get_by_role("button", name="Create key").click()
        key = page.get_by_test_id("new-key").inner_text()
        assert key.startswith("pc-"), key
        expect(page.get_by_text("it will not be shown again")).to_be_visible()
        shot(page, "proxy-keys")
        page.get_by_role("button", name="I have copied it").click()
        page.reload()
        expect(page.get_by_role("row").filter(has_text="browser")).to_contain_text(key[:10])
        assert key not in page.content(), "the key is shown again after it was dismissed"
        # A second key, revoked: it shows revoked and offers no Revoke.
        page.get_by_label("Key name").fill("short-lived")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_test_id("new-key")).to_be_visible()
        page.get_by_role("button", name="Revoke short-lived").click()
        expect(page.get_by_role("row").filter(has_text="short-lived")).to_contain_text("revoked")
        expect(page.get_by_role("button", name="Revoke short-lived")).to_have_count(0)

        step("deploy to the local gateway")
        page.get_by_role("link", name="Deploy").click()
        page.get_by_label("Gateway").select_option("local")
        page.get_by_role("button", name="Deploy", exact=True).click()
        expect(page.get_by_role("status").filter(has_text="deployed to local")).to_be_visible()
        latest = page.get_by_role("row").filter(has_text="latest")
        expect(latest).to_contain_text("Active")
        shot(page, "proxy-deploy")

        step("get started: call the invoke URL from the try-it box")
        page.get_by_role("link", name="Get Started").click()
        invoke = page.get_by_test_id("invoke-url").inner_text()
        assert invoke.endswith("/console-chat/chat/completions"), invoke
        expect(page.get_by_text("from openai import OpenAI")).to_be_visible()
        page.get_by_label("API key").fill(key)
        page.get_by_label("Model").fill("gpt-5-mini")
        page.get_by_label("Message").fill("Hello console")
        # The gateway takes the new configuration within a couple of
        # seconds of the deployment: until then the proxy is a 404.
        for _ in range(20):
            page.get_by_role("button", name="Send").click()
            expect(page.get_by_test_id("try-status")).to_be_visible()
            if page.get_by_test_id("try-status").inner_text() == "200":
                break
            time.sleep(0.5)
        expect(page.get_by_test_id("try-status")).to_have_text("200")
        expect(page.get_by_test_id("try-answer")).to_have_text(
            "Mock reply from openai model gpt-5-mini: Hello console"
        )
        expect(page.get_by_test_id("try-route")).not_to_have_text("none")
        shot(page, "proxy-get-started")
        # The guardrail attached above blocks its word, with its status.
        page.get_by_label("Message").fill("say forbidden-word please")
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_test_id("try-status")).to_have_text("403")
        expect(page.get_by_test_id("try-answer")).to_contain_text("Blocked by a guardrail")

        step("revisions and the diff against the deployed revision")
        page.get_by_role("link", name="Overview").click()
        page.get_by_label("Description").fill("changed after deploying")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status").filter(has_text="Saved as revision")).to_be_visible()
        page.get_by_role("link", name="Deploy").click()
        expect(page.get_by_label("Changes on local")).to_contain_text("changed after deploying")
        page.get_by_role("link", name="Revisions").click()
        expect(page.locator(".badge", has_text="current")).to_be_visible()
        shot(page, "proxy-revisions")

        step("stop the deployment")
        page.get_by_role("link", name="Deploy").click()
        page.get_by_role("button", name="Stop the deployment on local").click()
        expect(page.get_by_role("status").filter(has_text="Stopped the deployment on local")).to_be_visible()
        expect(latest).to_contain_text("Inactive")
        expect(page.get_by_role("button", name="Stop the deployment on local")).to_have_count(0)

        step("gateways: cards, and registering one shows its token once")
        page.get_by_role("link", name="Gateways").click()
        card = page.locator("article.card").filter(has_text="local")
        expect(card).to_contain_text("Active")
        expect(card).to_contain_text("In sync")
        page.get_by_role("button", name="Register gateway").click()
        page.get_by_label("Name").fill("edge-1")
        page.get_by_label("URL clients use").fill("http://127.0.0.1:9")
        page.get_by_role("button", name="Register", exact=True).click()
        expect(page.get_by_text(re.compile(r"--token gwt-"))).to_be_visible()
        shot(page, "gateways-register")
        page.get_by_role("button", name="Done").click()
        expect(page.locator("article.card").filter(has_text="edge-1")).to_contain_text("Not Active")
        shot(page, "gateways")

        step("policy hub: search, docs, versions")
        page.get_by_role("link", name="Policy hub").click()
        page.get_by_label("Search policies").fill("guard")
        expect(page.get_by_role("link", name="guardrails")).to_be_visible()
        expect(page.get_by_role("link", name="cache")).to_have_count(0)
        shot(page, "policy-hub")
        page.get_by_role("link", name="guardrails").click()
        expect(page.get_by_label("Version")).to_have_value("0.1.0")
        expect(page.locator(".docs")).to_contain_text("regex deny/allow lists")
        shot(page, "policy-detail")

        step("applications: create one and a key, shown once")
        page.get_by_role("link", name="Applications").click()
        page.get_by_role("button", name="Create application").click()
        page.get_by_label("Name").fill("Console App")
        page.get_by_label("Description").fill("subscribes from the browser")
        page.get_by_role("button", name="Create application").click()
        expect(page.get_by_role("heading", name="Console App")).to_be_visible()
        page.get_by_label("Key name").fill("console-app-key")
        page.get_by_role("button", name="Create key").click()
        app_key = page.get_by_test_id("new-key").inner_text()
        assert app_key.startswith("pc-"), app_key
        expect(page.get_by_text("it will not be shown again")).to_be_visible()
        page.get_by_role("button", name="I have copied it").click()
        expect(page.get_by_test_id("new-key")).to_have_count(0)
        expect(page.get_by_role("row").filter(has_text="console-app-key")).to_contain_text(app_key[:10])

        step("plans: a negative quota is refused on its row, then 1 request an hour")
        page.goto(CONSOLE + "/#/proxies/demo/plans")
        page.get_by_role("button", name="Create plan").click()
        page.get_by_label("Plan name").fill("hourly-one")
        page.get_by_role("textbox", name="Models").fill("gpt-5-mini, gpt-4o-mini")
        page.get_by_role("button", name="Add quota").click()
        page.get_by_role("button", name="Add quota").click()
        rows = [page.get_by_test_id("limit-row-0"), page.get_by_test_id("limit-row-1")]
        rows[0].get_by_label("Limit").fill("1000")
        rows[0].get_by_label("Metric").select_option("total_tokens")
        rows[1].get_by_label("Limit").fill("-1")
        page.get_by_role("button", name="Create plan").click()
        # Admin's 422 names `limits[1].limit`: the second row says so.
        expect(rows[1].locator(".error-text")).to_contain_text("minimum")
        expect(rows[1].get_by_label("Limit")).to_have_attribute("aria-invalid", "true")
        expect(rows[0].locator(".error-text")).to_have_count(0)
        shot(page, "proxy-plan-field-error")
        rows[0].get_by_role("button", name="Remove quota 1").click()
        row = page.get_by_test_id("limit-row-0")
        expect(row.get_by_label("Limit")).to_have_value("-1")
        row.get_by_label("Limit").fill("1")
        page.get_by_role("button", name="Create plan").click()
        expect(page.get_by_test_id("plan-hourly-one")).to_contain_text("requests: 1 / hour")
        expect(page.get_by_test_id("plan-hourly-one")).to_contain_text("gpt-5-mini")

        step("subscribe the application under the plan")
        page.get_by_role("link", name="Applications").click()
        page.get_by_role("link", name="Console App").click()
        page.get_by_label("Proxy id").fill("demo")
        page.get_by_label("Plan").select_option(label="hourly-one")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_test_id("subscription-demo")).to_contain_text("active")
        expect(page.get_by_test_id("subscription-demo")).to_contain_text("hourly-one")
        shot(page, "application")

        step("the application's key on the demo proxy: 200, then the plan's 429")
        invoke = api("GET", "/proxies/demo")["deployed_gateways"][0]["invoke_url"]

        def chat():
            req = urllib.request.Request(
                invoke,
                method="POST",
                data=json.dumps({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]}).encode(),
                headers={"Authorization": f"Bearer {app_key}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        # The key reaches the gateway with the next configuration (a
        # second or two after subscribing): until then it is unknown.
        deadline = time.time() + 20
        status = chat()
        while status in (401, 403) and time.time() < deadline:
            time.sleep(0.5)
            status = chat()
        assert status == 200, status
        assert chat() == 429

        step("the proxy's owner sees the subscription; the plan cannot go while it is open")
        page.goto(CONSOLE + "/#/proxies/demo/plans")
        sub = page.get_by_test_id("proxy-subscription-console-app")
        expect(sub).to_contain_text("active")
        page.get_by_role("button", name="Suspend subscription of console-app").click()
        expect(sub).to_contain_text("suspended")
        page.get_by_role("button", name="Resume subscription of console-app").click()
        expect(sub).to_contain_text("active")
        page.get_by_role("button", name="Delete plan hourly-one").click()
        expect(page.get_by_role("alert")).to_contain_text("close those subscriptions")
        # Edited in place: new subscriptions will wait for approval.
        page.get_by_role("button", name="Edit plan hourly-one").click()
        expect(page.get_by_role("textbox", name="Models")).to_have_value("gpt-5-mini\ngpt-4o-mini")
        page.get_by_label("Subscriptions need my approval").check()
        page.get_by_role("button", name="Save plan").click()
        expect(page.get_by_test_id("plan-hourly-one")).to_contain_text("needed")
        expect(page.get_by_test_id("plan-hourly-one")).to_contain_text("requests: 1 / hour")
        shot(page, "proxy-plans")

        step("spend per application on the usage page, and its CSV")
        page.get_by_role("link", name="Usage").click()
        spend = page.get_by_test_id("app-spend").get_by_role("cell", name="Console App")
        deadline = time.time() + 30
        while time.time() < deadline and not spend.count():
            time.sleep(2)
            page.reload()
            expect(page.get_by_role("heading", name="Spend per application")).to_be_visible()
        expect(spend).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        with open(download.value.path()) as f:
            csv = f.read()
        assert "console-app" in csv, csv
        assert TOKEN not in page.url

        step("close the subscription")
        page.get_by_role("link", name="Console App").click()
        page.get_by_role("button", name="Close subscription to demo").click()
        expect(page.get_by_test_id("subscription-demo")).to_contain_text("closed")
        expect(page.get_by_role("button", name="Close subscription to demo")).to_have_count(0)

        step("subscribe again: the plan now needs approval, given on the proxy's Plans tab")
        page.get_by_label("Proxy id").fill("demo")
        page.get_by_label("Plan").select_option(label="hourly-one (needs approval)")
        page.get_by_role("button", name="Subscribe").click()
        pending = page.get_by_role("row").filter(has_text="pending")
        expect(pending).to_contain_text("hourly-one")
        page.goto(CONSOLE + "/#/proxies/demo/plans")
        expect(page.get_by_text("1 pending")).to_be_visible()
        sub = page.get_by_role("row").filter(has_text="console-app").filter(has_text="pending")
        sub.get_by_role("button", name="Approve subscription of console-app").click()
        expect(page.get_by_role("row").filter(has_text="console-app").filter(has_text="active")).to_have_count(1)
        expect(page.get_by_text("1 pending")).to_have_count(0)

        step("usage: the try-it requests, reported by heartbeats")
        page.get_by_role("link", name="Usage").click()
        deadline = time.time() + 20
        while time.time() < deadline:
            if page.get_by_role("cell", name="console-chat").count():
                break
            time.sleep(2)
            page.get_by_label("Per", exact=True).select_option("key")
            page.get_by_label("Per", exact=True).select_option("proxy")
        expect(page.get_by_role("cell", name="console-chat")).to_be_visible()
        # By hour (the default range): the try-it requests ran this hour.
        expect(page.get_by_test_id("this-hour")).not_to_have_text(re.compile(r"^0 request"))
        shot(page, "usage")
        page.get_by_label("Range").select_option("7")
        expect(page.get_by_role("cell", name="console-chat")).to_be_visible()
        expect(page.get_by_role("columnheader", name="Day")).to_be_visible()

        step("audit log with a filter")
        page.get_by_role("link", name="Audit log").click()
        page.get_by_label("Action").select_option("key.create")
        expect(page.get_by_role("cell", name="proxies/console-chat/keys", exact=False).first).to_be_visible()
        expect(page.get_by_role("cell", name="deployment.create")).to_have_count(0)
        page.get_by_label("Resource starts with").fill("proxies/demo-anthropic")
        expect(page.get_by_role("cell", name="proxies/demo-anthropic/keys/")).to_have_count(1)
        expect(page.get_by_role("cell", name="console-chat")).to_have_count(0)
        page.get_by_label("Resource starts with").fill("")
        shot(page, "audit")

        step("semantic routing: topics, a fallback, and an utterances file")
        page.goto(CONSOLE + "/#/proxies/demo-mistral/routes")
        page.get_by_label("Routing strategy").select_option("semantic")
        page.get_by_role("button", name="Add route").click()
        page.get_by_label("Route name").nth(0).fill("general")
        page.get_by_label(re.compile(r"^Provider id")).nth(1).fill("mock-openai")
        page.get_by_label("Route name").nth(1).fill("billing")
        page.get_by_role("button", name="Add topic").nth(1).click()
        page.get_by_label("Topic name").fill("billing")
        page.get_by_label("Utterances (one per line)").fill("refund my order\ninvoice question")
        page.get_by_label("Fallback route").select_option("general")
        page.get_by_label("Embeddings provider id").fill("mock-openai")
        page.get_by_label("Embeddings model").fill("text-embedding-3-small")
        page.get_by_role("button", name="Save routes").click()
        expect(page.get_by_role("status").filter(has_text="Saved as revision")).to_be_visible()
        shot(page, "proxy-routes-semantic")
        utterances = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"billing-{os.getpid()}.txt")
        with open(utterances, "w") as f:
            f.write("# billing questions\nwhere is my refund\ncharge on my card\n")
        page.get_by_label("Upload utterances file for billing").set_input_files(utterances)
        # The page reads the file after the change event: it is removed
        # only once the upload is done.
        expect(page.get_by_role("status").filter(has_text="Uploaded the utterances of billing")).to_be_visible()
        os.remove(utterances)
        expect(page.get_by_label("Utterances (one per line)")).to_have_value("where is my refund\ncharge on my card")
        # Admin stored it: the topic's utterances over REST.
        spec = api("GET", "/proxies/demo-mistral")
        assert spec["routing"]["strategy"] == "semantic", spec["routing"]
        assert spec["routing"]["fallback"]["route"] == "general", spec["routing"]
        assert [r["provider"] for r in spec["routes"]] == ["mock-mistral", "mock-openai"], spec["routes"]
        assert spec["semantic_service"]["provider"] == "mock-openai", spec["semantic_service"]
        assert spec["routes"][1]["topics"][0]["utterances"] == ["where is my refund", "charge on my card"], spec["routes"]

        step("dark mode")
        page.emulate_media(color_scheme="dark")
        page.goto(CONSOLE + "/#/proxies/demo/get-started")
        expect(page.get_by_test_id("invoke-url")).to_be_visible()
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(13, 17, 23)", bg
        shot(page, "dark-get-started")
        page.emulate_media(color_scheme="light")

        step("a developer is not offered what it may not do")
        dev = api("POST", "/tokens", {"name": "browser-dev", "role": "developer"})["token"]
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, dev)
        expect(page.get_by_role("link", name="Providers")).to_have_count(0)
        expect(page.get_by_role("link", name="Audit log")).to_have_count(0)
        # Applications are their owner's: the admin's is not listed.
        page.get_by_role("link", name="Applications").click()
        expect(page.get_by_text("No applications yet.")).to_be_visible()
        expect(page.get_by_role("link", name="Console App")).to_have_count(0)
        # Its own application, subscribed to the admin's demo proxy: it may
        # close the subscription, not approve it (the proxy's side does).
        api("POST", "/applications", {"name": "Dev App"}, token=dev)
        api("POST", "/applications/dev-app/subscriptions", {"proxy": "demo", "plan": "hourly-one"}, token=dev)
        page.goto(CONSOLE + "/#/applications/dev-app")
        expect(page.get_by_test_id("subscription-demo")).to_contain_text("pending")
        expect(page.get_by_role("button", name="Close subscription to demo")).to_be_visible()
        expect(page.get_by_role("button", name="Approve subscription to demo")).to_have_count(0)
        page.get_by_role("link", name="Gateways").click()
        expect(page.get_by_role("button", name="Register gateway")).to_have_count(0)

        step("keyboard: the sign-in form works without a mouse")
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("API token").focus()
        page.keyboard.type(TOKEN)
        page.keyboard.press("Enter")
        # Back on the page the fragment names, signed in as admin again.
        expect(page.get_by_role("heading", name="Gateways")).to_be_visible()
        expect(page.get_by_text("bootstrap · admin")).to_be_visible()

        step("narrow screens get a menu")
        page.set_viewport_size({"width": 420, "height": 800})
        expect(page.get_by_role("link", name="Gateways")).to_be_hidden()
        page.get_by_role("button", name="Menu").click()
        expect(page.get_by_role("link", name="Gateways")).to_be_visible()
        shot(page, "mobile-menu")

        browser.close()
    print("console flows: ok")


if __name__ == "__main__":
    main()
