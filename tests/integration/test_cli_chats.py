"""The terminal side of issue 17: /regen /alt /edit /attach /preset, history search, bench."""

import json

from tests.conftest import run_cli


def lines(out):
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_regen_alt_edit_attach_and_preset_in_the_terminal(tmp_path):
    f = tmp_path / "fact.txt"
    f.write_text("The password is swordfish.\n", "utf-8")
    script = (
        "\n".join(
            [
                "Hello",
                "/regen",
                "/alt",
                "/alt 1",
                "/alt 9",
                "/edit Hello again",
                f"/attach {f}",
                "What is the password?",
                "/preset save Quick",
                "/preset",
                "/preset Quick",
            ]
        )
        + "\n"
    )
    r = run_cli("chat", "--json", "--max-tokens", "5", "--ctx", "1024", stdin=script)
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    first, regen, alts, alt1, alt9, edit, attach, turn, saved, listed, loaded = out
    assert regen["command"] == "regen" and regen["versions"] == 2 and regen["version"] == 2
    assert alts["versions"] == 2 and alt1["version"] == 1 and alt1["reply"] == first["reply"]
    assert "choose 1 to 2" in alt9["error"]
    assert edit["command"] == "edit" and edit["completion_tokens"] > 0
    assert attach["attachment"]["name"] == "fact.txt" and attach["attachment"]["tokens"] > 0
    assert turn["prompt_tokens"] > attach["attachment"]["tokens"]
    assert saved["preset"] == "Quick" and listed["last_for_model"] == "Quick"
    assert loaded["preset"] == "Quick"
    conv_id = turn["conversation_id"]
    rec = json.loads(run_cli("history", "export", conv_id, "--format", "json").stdout)
    assert rec["schema"] == 3
    users = [m for m in rec["messages"] if m["role"] == "user"]
    assert (
        users[0]["content"] == "Hello again" and users[0]["alternatives"][0]["content"] == "Hello"
    )
    assert users[1]["attachments"][0]["name"] == "fact.txt"

    found = run_cli("history", "search", "swordfish", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert hits and hits[0]["conversation_id"] == conv_id
    assert hits[0]["snippet"][slice(*hits[0]["spans"][0])].lower() == "swordfish"
    text = run_cli("history", "search", "SWORDFISH")
    assert conv_id in text.stdout and "«swordfish»" in text.stdout
    none = run_cli("history", "search", "nothing-like-this-anywhere")
    assert none.returncode == 0 and "no matches" in none.stderr


def test_bench_search_prints_the_time_per_keystroke():
    r = run_cli("bench", "--search", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    print(res)
    assert res["chats"] == 2000 and res["found_after_save"] and res["max_ms"] < 1000
