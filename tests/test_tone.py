from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from mail.tone import CODES, WHY, ToneWarning, check_tone, strip_quoted

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)  # a Wednesday


def warnings(draft, **kw):
    args = dict(
        thread_texts_ours=[],
        customer_texts=["Hello, the export to CSV fails with error 500 since yesterday."],
        saved_replies_used_in_thread=(),
        saved_reply_used=None,
        channel="email",
        now=NOW,
    )
    args.update(kw)
    return check_tone(draft, **args)


def found(draft, code, **kw):
    return [w.found for w in warnings(draft, **kw) if w.code == code]


# (code, draft, expected found words) — must fire
FIRES = [
    ("thanks-but", "Thank you for your patience, but the fix is not ready.", "Thank you for your patience, but"),
    ("thanks-but", "Thanks for the logs, however they are empty.", "Thanks for the logs, however"),
    ("thanks-but", "I'm sorry, but I can not help you with this.", "sorry, but"),
    ("thanks-but", "I apologize although this is expected.", "I apologize although"),
    ("thanks-but", "Sorry for the wait. However, the export is still broken.", "Sorry for the wait. However"),
    ("thanks-but", "THANK YOU for writing.\n\nBut I need the file.", "THANK YOU for writing. But"),
    ("thanks-but", "Sorry, so sorry, but it is gone.", "sorry, but"),  # the apology nearest the "but"
    ("actually", "The export actually works.", "actually"),
    ("actually", "Actually, that setting is elsewhere.", "Actually"),
    ("blame", "As I already said, the file is too big.", "As I already said"),
    ("blame", "as I said before, restart it.", "as I said before"),
    ("blame", "As mentioned, the limit is 10 MB.", "As mentioned"),
    ("blame", "As previously stated, this is expected.", "As previously stated"),
    ("blame", "As stated in our docs, CSV is supported.", "As stated"),
    ("blame", "You should have checked the settings first.", "You should have"),
    ("blame", "You failed to attach the file.", "You failed to"),
    ("blame", "You need to read the manual.", "You need to read"),
    ("blame", "This is obviously a browser problem.", "obviously"),
    ("blame", "As per my last email, please restart.", "As per my last email"),
    ("channel-switch", "Please give us a call so we can sort it out.", "give us a call"),
    ("channel-switch", "It would be quicker if you call us on 0800 123.", "call us"),
    ("channel-switch", "Please call our hotline.", "call our hotline"),
    ("channel-switch", "Feel free to phone me this afternoon.", "phone me"),
    ("channel-switch", "Can we hop on a quick call tomorrow?", "hop on a quick call"),
    ("channel-switch", "Just ring us any time.", "ring us"),
    ("channel-switch", "Reach us by phone for faster help.", "Reach us by phone"),
    ("channel-switch", "Please phone our team.", "phone our team"),
    ("channel-switch", "Please reach out to us by phone.", "reach out to us by phone"),
    ("channel-switch", "Call support at 0800 123 and they will reset it.", "Call support at"),
    ("channel-switch", "I can call you tomorrow if you like.", "call you"),
    ("channel-switch", "Can I give you a quick call?", "give you a quick call"),
    ("channel-switch", "Our phone number is 0800 123.", "Our phone number"),
    ("channel-switch", "Just dial 0800 123 45.", "dial 0800 123 45"),
    # The customer mentioned a phone, or a callback, without asking for a call.
    ("channel-switch", "Please give us a call.", "give us a call",
     {"customer_texts": ["My phone is an iPhone 12 and the app crashes."]}),
    ("channel-switch", "Please give us a call.", "give us a call",
     {"customer_texts": ["The webhook callback fails with error 500."]}),
    ("channel-switch", "Please give us a call.", "give us a call",
     {"customer_texts": ["I never get the 2FA code by phone."]}),
    ("channel-switch", "Please give us a call.", "give us a call",
     {"customer_texts": ["Can you call the export API with a smaller page?"]}),
    ("upsell", "The Premium plan includes priority exports.", "Premium plan", {"customer_texts": [
        "It still fails.\n\n-----Original Message-----\nFrom: Support\nSent: Monday\n\nOur pricing page lists every plan."]}),
    ("upsell", "The Premium plan includes priority exports.", "Premium plan", {"customer_texts": [
        "It still fails.\n\n________________________________\nFrom: Support <support@x.example>\n\nSee our pricing."]}),
    ("upsell", "You could upgrade your plan to get this.", "upgrade"),
    ("upsell", "The Premium plan includes priority exports.", "Premium plan"),
    ("upsell", "Our pro plan has it.", "pro plan"),
    ("upsell", "Check out our special offer this month.", "special offer"),
    ("upsell", "I can give you a discount on the annual price.", "discount"),
    ("upsell", "The reporting add-on solves this.", "add-on"),
    ("upsell", "The Pro version does this automatically.", "Pro version"),
    ("upsell", "A bigger plan would give you more exports.", "bigger plan"),
    ("upsell", "You could upgrade to Premium for this.", "upgrade"),
    ("upsell", "Upgrade your account to get it.", "Upgrade"),
    ("past-date", "I will have it fixed by 24 November.", "24 November"),
    ("past-date", "I will reply by Nov 24.", "Nov 24"),
    ("past-date", "Expect it on 24/11/2026.", "24/11/2026"),
    ("past-date", "Expect it on 2026-11-24.", "2026-11-24"),
    ("past-date", "I'll call back Tuesday, 24 November 2026.", "Tuesday, 24 November 2026"),
    ("past-date", "The release is planned for November 24th, 2026.", "November 24th, 2026"),
    ("past-date", "By 3 March 2025 at the latest.", "3 March 2025"),
    ("past-date", "On 24.11.2026 I will deploy.", "24.11.2026"),
    ("past-date", "by Mon 23 Nov", "Mon 23 Nov"),
    ("past-date", "Ready on 01/02/2026.", "01/02/2026"),  # past whichever way it is read
    ("we-not-i", "We will get back to you shortly.", "We will get back to"),
    ("we-not-i", "We'll look into it.", "We'll look into"),
    ("we-not-i", "We're going to look into it.", "We're going to look into"),
    ("we-not-i", "We’re going to get back to you.", "We’re going to get back to"),
]

# (code, draft, extra keyword arguments) — must not fire
DOES_NOT_FIRE = [
    ("thanks-but", "Thank you for your patience. I have fixed the export.", {}),
    ("thanks-but", "Thanks for the logs. I checked them and found the cause, but it needs a restart.", {}),
    ("thanks-but", "The upload failed, but the export worked. Thanks!", {}),
    ("thanks-but", "I'm sorry this happened. The fix is live now.", {}),
    ("thanks-but", "> Thanks, but it still fails\nI have fixed it now.", {}),
    ("thanks-but", "Thanks to your logs I found the butler bug.", {}),
    ("thanks-but", "Thanks for the logs: I went through every line of them with the team this morning and compared "
                   "them with the server side, where the export job had stopped at row 4,000, but it is fixed now.", {}),
    ("actually", "The export factually matches the data.", {}),
    ("actually", "> Actually it never worked\nI have fixed it.", {}),
    ("actually", "I have fixed it.\n\n-----Original Message-----\nFrom: Ann\n\nActually it never worked.", {}),
    ("blame", "As you mentioned, the export fails on large files.", {}),
    ("blame", "As mentioned in your email, the export fails.", {}),
    ("blame", "You should have received an email with the link.", {}),
    ("blame", "You should have access now.", {}),
    ("blame", "You should have a new button in the toolbar.", {}),
    ("blame", "I said I would check, and I did.", {}),
    ("blame", "> As I already said, it is broken\nThanks for the detail.", {}),
    ("channel-switch", "I called the function with your data and it works.", {}),
    ("channel-switch", "The API call returns 200 now.", {}),
    ("channel-switch", "I will call it done once you confirm.", {}),
    ("channel-switch", "Please give us a call.", {"customer_texts": ["Could you call me? My number is 555 1234."]}),
    ("channel-switch", "Please call us at 0800 123.", {"customer_texts": ["Can someone please call me back?"]}),
    ("channel-switch", "Please call us at 0800 123.", {"channel": "phone"}),
    ("channel-switch", "If your phone app shows the error, send me a screenshot.", {}),
    ("channel-switch", "The webhook will call your endpoint again.", {}),
    ("channel-switch", "Please give us a call.", {"customer_texts": ["My mobile is +49 170 1234567."]}),
    ("channel-switch", "Please give us a call.", {"customer_texts": ["Can we discuss this over the phone?"]}),
    ("channel-switch", "Please give us a call.", {"customer_texts": ["Is there a number I can call?"]}),
    ("channel-switch", "Please give us a call.", {"customer_texts": ["I would like a callback tomorrow."]}),
    ("upsell", "I can offer a workaround until the fix ships.", {}),
    ("upsell", "Please upgrade to version 4.2.1, which fixes the export.", {}),
    ("upsell", "Please upgrade your browser to the latest release.", {}),
    # Upgrading software is advice, not a sale.
    ("upsell", "Please upgrade to the newest version.", {}),
    ("upsell", "Please upgrade to the current release, which fixes it.", {}),
    ("upsell", "Please upgrade the Ledgerly app on your phone.", {}),
    ("upsell", "Please install a higher version of the app.", {}),
    ("upsell", "The Premium plan includes priority exports.", {"customer_texts": ["Which plan includes priority exports?"]}),
    ("upsell", "You could upgrade your plan to get this.", {"customer_texts": ["How much is it to upgrade?"]}),
    ("upsell", "I can give you a discount.", {"customer_texts": ["This outage cost us a day, I want a refund."]}),
    ("upsell", "The reporting add-on solves this.", {"customer_texts": ["Does the reporting add-on do this?"]}),
    ("upsell", "Our app offers an export to CSV.", {}),
    # The customer's Outlook reply quotes our last mail unmarked: its words are ours, not theirs.
    ("upsell", "The Premium plan includes priority exports.", {"customer_texts": [
        "Which plan includes priority exports?\n\n-----Original Message-----\nFrom: Support\n\nHello"]}),
    ("upsell", "As a premium customer you get a reply within 2 hours.", {}),
    ("past-date", "I will have it fixed today.", {}),
    ("past-date", "I will have it fixed by tomorrow.", {}),
    ("past-date", "I will reply by Friday.", {}),
    ("past-date", "I will have it fixed by 25 November.", {}),
    ("past-date", "I will have it fixed by 26 November 2026.", {}),
    ("past-date", "Expect it on 2026-12-01.", {}),
    ("past-date", "Expect it on 30/11/2026.", {}),
    ("past-date", "Fixed by 5 January.", {"now": datetime(2026, 12, 28, tzinfo=timezone.utc)}),
    ("past-date", "Please install version 1.2.2020 or 4.10.26.", {}),
    ("past-date", "You may 5 times retry.", {}),
    ("past-date", "Ready on 03/12/2026.", {}),  # 3 Dec or 12 Mar: not past both ways
    ("past-date", "> by 24 November\nI am on it.", {}),
    ("past-date", "Fixed by 30 February.", {}),  # not a date
    ("we-not-i", "I will get back to you by Friday.", {}),
    ("we-not-i", "We released the fix yesterday.", {}),
]


@pytest.mark.parametrize("code, draft, expected, kw", [case if len(case) == 4 else (*case, {}) for case in FIRES])
def test_check_fires(code, draft, expected, kw):
    assert expected in found(draft, code, **kw), warnings(draft, **kw)


@pytest.mark.parametrize("code, draft, kw", DOES_NOT_FIRE)
def test_check_does_not_fire(code, draft, kw):
    assert found(draft, code, **kw) == [], warnings(draft, **kw)


@pytest.mark.parametrize(
    "ours, draft, fires",
    [
        ([], "I'm sorry for the trouble. The fix is live.", False),
        (["I apologize for the delay, I will handle this by Friday."], "Sorry for the trouble. The fix is live.", True),
        (["I apologize for the delay."], "The fix is live now.", False),  # the draft adds none
        ([], "Sorry for the delay. Apologies again for the trouble.", True),
        (["> sorry\nI will handle this by Friday."], "Sorry for the trouble.", False),  # quoted apologies don't count
        (["We regret the inconvenience."], "I apologize for this.", True),
        (["Thanks for the report."], "I'm sorry it broke.", False),
    ],
)
def test_repeated_apology(ours, draft, fires):
    codes = [w.code for w in warnings(draft, thread_texts_ours=ours)]
    assert ("repeated-apology" in codes) is fires


@pytest.mark.parametrize(
    "used_in_thread, used, fires",
    [
        ({"export-fix"}, "export-fix", True),
        ({"export-fix", "greeting"}, "greeting", True),
        ({"export-fix"}, "greeting", False),
        (set(), "export-fix", False),
        ({"export-fix"}, None, False),
        ({"export-fix"}, ["export-fix", "greeting"], True),  # every saved reply inserted counts, not the last
        (set(), ["greeting", "greeting"], True),  # twice in this draft
        (set(), ["greeting", "export-fix"], False),
    ],
)
def test_template_repeat(used_in_thread, used, fires):
    result = [w for w in warnings("Here is how to fix it.", saved_replies_used_in_thread=used_in_thread, saved_reply_used=used) if w.code == "template-repeat"]
    assert bool(result) is fires
    if fires:
        assert result[0].found in used


@pytest.mark.parametrize(
    "now, tz, fires",
    [
        # 24 Nov 23:30 UTC is already 25 Nov in Stockholm: "by 24 November" is past there.
        (datetime(2026, 11, 24, 23, 30, tzinfo=timezone.utc), None, False),
        (datetime(2026, 11, 24, 23, 30, tzinfo=timezone.utc), ZoneInfo("Europe/Stockholm"), True),
        (datetime(2026, 11, 24, 23, 30, tzinfo=timezone.utc), "Europe/Stockholm", True),
        (datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc), "America/New_York", False),
        (datetime(2026, 11, 24, 12, 0), None, False),  # naive now: its own date
    ],
)
def test_past_date_uses_customer_timezone(now, tz, fires):
    result = found("I will reply by 24 November.", "past-date", now=now, customer_tz=tz)
    assert bool(result) is fires


def test_clean_draft_has_no_warnings():
    draft = (
        "Hi Jane,\n\nThank you for the details and the screenshot. I found the cause: exports over "
        "10 MB hit a limit. I have raised it for your account, so the export should work now.\n\n"
        "If it fails again, reply here and I will look at it straight away.\n\nSam"
    )
    assert warnings(draft) == []


def test_warning_shape():
    [w] = warnings("It actually works.")
    assert w == ToneWarning("actually", "actually", w.why)
    assert w.why.endswith(".") and "seed" in w.why
    with pytest.raises(AttributeError):
        w.code = "x"  # type: ignore[misc]


@pytest.mark.parametrize("code", CODES)
def test_each_warning_says_why_then_what_to_change(code):
    why, _, change = WHY[code].partition("). ")
    assert "seed" in why
    assert change.endswith(".") and len(change.split()) >= 4, WHY[code]


def test_all_codes_have_reasons():
    assert set(CODES) == {
        "thanks-but", "actually", "repeated-apology", "blame", "channel-switch",
        "upsell", "template-repeat", "past-date", "we-not-i",
    }  # fmt: skip


def test_found_folds_whitespace_and_reports_each_wording_once():
    ws = warnings("Actually it works. It actually\nworks. actually.")
    assert [w.found for w in ws if w.code == "actually"] == ["Actually"]
    [w] = [w for w in warnings("Thanks   for\n  writing, but no.") if w.code == "thanks-but"]
    assert w.found == "Thanks for writing, but"


def test_strip_quoted_keeps_line_count():
    assert strip_quoted("a\n> b\n  > c\nd") == "a\n\n\nd"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", ["sorry " * 20000 + "but", "thanks " * 5000, "Sorry. " * 5000, "1/2/2026 " * 5000, "as I " * 5000])
def test_long_drafts_stay_fast(text):
    check_tone(text, thread_texts_ours=[text], customer_texts=[text], saved_replies_used_in_thread=(), saved_reply_used=None, now=NOW)


def test_many_apologies_before_one_but_are_one_warning_of_the_nearest():
    assert found("Sorry " * 2000 + "but no.", "thanks-but") == ["Sorry but"]
