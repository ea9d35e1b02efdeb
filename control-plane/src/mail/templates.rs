//! The account mails (verify, already registered, welcome, reset, password changed) in English and Arabic,
//! rendered as plain text plus a small self-contained HTML document. Pure functions, no I/O.

/// Which mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// "Confirm your address", with the verification link.
    Verify,
    /// Someone signed up with an address that already has an account.
    AlreadyRegistered,
    /// The address is confirmed.
    Welcome,
    /// A password reset was requested, with the reset link and token.
    Reset,
    /// The password was reset or changed; says how many API keys are still live.
    PasswordChanged,
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, no interpolated values.
    pub subject: String,
    /// The text/plain part; links stand on their own lines.
    pub text: String,
    /// The text/html part: a complete document with inline CSS only.
    pub html: String,
}

/// What a template may use. `link` is the verification link (Verify) or the password-reset link (Reset); empty otherwise.
/// `token` is the raw reset token (Reset only; shown in the mail too, so it can be pasted into an API call); empty otherwise.
#[derive(Debug, Clone, Copy)]
pub struct MailVars<'a> {
    /// The account holder's display name, if any.
    pub name: Option<&'a str>,
    /// The address the mail goes to.
    pub email: &'a str,
    /// The verification or reset link.
    pub link: &'a str,
    /// The raw reset token.
    pub token: &'a str,
    /// Where to log in.
    pub login_url: &'a str,
    /// Where to ask for a password reset.
    pub forgot_url: &'a str,
    /// The account's live API keys (PasswordChanged only).
    pub live_keys: u64,
}

/// The API call that consumes a reset token.
const RESET_ENDPOINT: &str = "POST /api/v1/auth/reset-password";

/// Everything that differs between the languages apart from the copy itself.
struct Lang {
    code: &'static str,
    dir: &'static str,
    align: &'static str,
    font: &'static str,
    brand: &'static str,
    /// Greeting before a name, after it, and without one.
    hello: [&'static str; 3],
    footer: &'static str,
    copy: for<'a> fn(MailKind, &MailVars<'a>, Block<'a>) -> (&'static str, Vec<Block<'a>>),
}

const EN: Lang = Lang {
    code: "en",
    dir: "ltr",
    align: "left",
    font: "-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif",
    brand: "Souq",
    hello: ["Hello ", ",", "Hello,"],
    footer: "You received this email because this address was entered on Souq.",
    copy: english,
};

const AR: Lang = Lang {
    code: "ar",
    dir: "rtl",
    align: "right",
    font: "Tahoma,'Segoe UI',Arial,sans-serif",
    brand: "سوق",
    hello: ["مرحبًا ", "،", "مرحبًا،"],
    footer: "وصلتك هذه الرسالة لأن عنوان بريدك الإلكتروني أُدخل في سوق.",
    copy: arabic,
};

/// A run of text inside a paragraph.
enum Seg<'a> {
    /// Fixed copy.
    Text(&'static str),
    /// A value that is always left-to-right (address).
    Ltr(&'a str),
    /// A value of unknown direction (a person's name).
    Auto(String),
}

enum Block<'a> {
    Para(Vec<Seg<'a>>),
    /// A button with its label, then the URL itself. Skipped when the URL is empty.
    Link(&'static str, &'a str),
    /// A left-to-right literal (token, API call) on its own lines. Skipped when empty.
    Code(String),
}

use Block::{Code, Link, Para};
use Seg::{Ltr, Text};

/// Renders `kind` in `locale` ("ar" = Arabic, anything else = English). A region or
/// script suffix is allowed: "ar-EG" and "AR_sa" are Arabic too.
pub fn render(kind: MailKind, locale: &str, vars: &MailVars<'_>) -> Rendered {
    let lang = lang_of(locale);
    let [hello, comma, bare] = lang.hello;
    let greeting = match clean_name(vars.name) {
        Some(name) => Para(vec![Text(hello), Seg::Auto(name), Text(comma)]),
        None => Para(vec![Text(bare)]),
    };
    let (subject, blocks) = (lang.copy)(kind, vars, greeting);
    Rendered {
        subject: subject.to_owned(),
        text: text_of(lang, &blocks),
        html: html_of(lang, subject, &blocks),
    }
}

fn lang_of(locale: &str) -> &'static Lang {
    let primary = locale.trim().split(['-', '_']).next().unwrap_or_default();
    if primary.eq_ignore_ascii_case("ar") { &AR } else { &EN }
}

/// The name with control and bidi-override characters dropped and whitespace collapsed,
/// so it cannot break lines or reorder the text around it; None when nothing is left.
fn clean_name(name: Option<&str>) -> Option<String> {
    let kept: String = name?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
        .collect();
    let joined = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then_some(joined)
}

/// The reset request for API users, or nothing when there is no token.
fn api_call(token: &str, password_hint: &str) -> String {
    if token.is_empty() {
        return String::new();
    }
    format!("{RESET_ENDPOINT}\n{{\"token\": \"{token}\", \"password\": \"{password_hint}\"}}")
}

// The copy reads best one block per line.
#[rustfmt::skip]
fn english<'a>(kind: MailKind, v: &MailVars<'a>, hello: Block<'a>) -> (&'static str, Vec<Block<'a>>) {
    let bye = Para(vec![Text("— The Souq team")]);
    match kind {
        MailKind::Verify => ("Confirm your email address for Souq", vec![
            hello,
            Para(vec![Text("Thanks for signing up for Souq. Please confirm that "), Ltr(v.email), Text(" is your email address by opening this link:")]),
            Link("Confirm my address", v.link),
            Para(vec![Text("The link expires in 24 hours.")]),
            Para(vec![Text("If you did not sign up for Souq, you can safely ignore this email.")]),
            bye,
        ]),
        MailKind::AlreadyRegistered => ("You already have a Souq account", vec![
            hello,
            Para(vec![Text("Someone, perhaps you, just tried to sign up for Souq with "), Ltr(v.email), Text(". This address already has an account, so no new account was created.")]),
            Para(vec![Text("To log in, go to:")]),
            Link("Log in", v.login_url),
            Para(vec![Text("Forgot your password? You can reset it here:")]),
            Link("Reset my password", v.forgot_url),
            Para(vec![Text("If this wasn't you, you can ignore this email. Nothing has changed in your account.")]),
            bye,
        ]),
        MailKind::Welcome => ("Welcome to Souq", vec![
            hello,
            Para(vec![Text("Your email address "), Ltr(v.email), Text(" is confirmed. Welcome to Souq!")]),
            Para(vec![Text("You can now run your own APIs in Python, Node.js or Go, and discover the APIs others offer.")]),
            Link("Log in to Souq", v.login_url),
            bye,
        ]),
        MailKind::Reset => ("Reset your Souq password", vec![
            hello,
            Para(vec![Text("We received a request to reset the password of the Souq account for "), Ltr(v.email), Text(". To choose a new password, open this link:")]),
            Link("Choose a new password", v.link),
            Para(vec![Text("If you use the API, this is your reset token:")]),
            Code(v.token.to_owned()),
            Para(vec![Text("Send it with your new password:")]),
            Code(api_call(v.token, "<new password>")),
            Para(vec![Text("The link and the token are valid for 1 hour and work only once. If you request another reset, this one stops working.")]),
            Para(vec![Text("If you did not ask for this, ignore this email: your password has not changed.")]),
            bye,
        ]),
        MailKind::PasswordChanged => ("Your Souq password was changed", vec![
            hello,
            Para(vec![Text("The password of the Souq account for "), Ltr(v.email), Text(" was just changed, and every session logged in before the change has been ended.")]),
            Para(vec![Text("API keys still live on this account: "), Seg::Auto(v.live_keys.to_string()), Text(". A password change does not revoke them unless it asks to; they keep working until you revoke them.")]),
            Para(vec![Text("If you did not change your password, reset it now, asking to revoke every API key too:")]),
            Link("Reset my password", v.forgot_url),
            bye,
        ]),
    }
}

// The copy reads best one block per line.
#[rustfmt::skip]
fn arabic<'a>(kind: MailKind, v: &MailVars<'a>, hello: Block<'a>) -> (&'static str, Vec<Block<'a>>) {
    let bye = Para(vec![Text("فريق سوق")]);
    match kind {
        MailKind::Verify => ("تأكيد عنوان بريدك الإلكتروني في سوق", vec![
            hello,
            Para(vec![Text("شكرًا لتسجيلك في سوق. يُرجى تأكيد أن "), Ltr(v.email), Text(" هو عنوان بريدك الإلكتروني بفتح الرابط التالي:")]),
            Link("تأكيد عنوان بريدي", v.link),
            Para(vec![Text("تنتهي صلاحية هذا الرابط بعد 24 ساعة.")]),
            Para(vec![Text("إذا لم تُنشئ حسابًا في سوق، فيمكنك تجاهل هذه الرسالة بأمان.")]),
            bye,
        ]),
        MailKind::AlreadyRegistered => ("لديك حساب في سوق بالفعل", vec![
            hello,
            Para(vec![Text("حاول شخصٌ ما، وربما أنت، إنشاء حساب في سوق باستخدام العنوان "), Ltr(v.email), Text(". لهذا العنوان حساب مسجَّل بالفعل، ولذلك لم يُنشأ حساب جديد.")]),
            Para(vec![Text("لتسجيل الدخول، انتقل إلى:")]),
            Link("تسجيل الدخول", v.login_url),
            Para(vec![Text("هل نسيت كلمة المرور؟ يمكنك إعادة تعيينها من هنا:")]),
            Link("إعادة تعيين كلمة المرور", v.forgot_url),
            Para(vec![Text("إذا لم تكن أنت من حاول ذلك، فتجاهل هذه الرسالة؛ لم يتغير شيء في حسابك.")]),
            bye,
        ]),
        MailKind::Welcome => ("أهلًا بك في سوق", vec![
            hello,
            Para(vec![Text("تم تأكيد عنوان بريدك الإلكتروني "), Ltr(v.email), Text(". أهلًا بك في سوق!")]),
            Para(vec![Text("يمكنك الآن تشغيل واجهاتك البرمجية بلغة Python أو Node.js أو Go، واستكشاف الواجهات التي يقدّمها الآخرون.")]),
            Link("الدخول إلى سوق", v.login_url),
            bye,
        ]),
        MailKind::Reset => ("إعادة تعيين كلمة المرور في سوق", vec![
            hello,
            Para(vec![Text("تلقّينا طلبًا لإعادة تعيين كلمة المرور لحساب سوق المرتبط بالعنوان "), Ltr(v.email), Text(". لاختيار كلمة مرور جديدة، افتح الرابط التالي:")]),
            Link("اختيار كلمة مرور جديدة", v.link),
            Para(vec![Text("إذا كنت تستخدم واجهة برمجة التطبيقات، فهذا رمز إعادة التعيين الخاص بك:")]),
            Code(v.token.to_owned()),
            Para(vec![Text("أرسله مع كلمة المرور الجديدة:")]),
            Code(api_call(v.token, "<كلمة المرور الجديدة>")),
            Para(vec![Text("الرابط والرمز صالحان لمدة ساعة واحدة، ولا يعملان إلا مرة واحدة. وإذا طلبت إعادة التعيين مرة أخرى، فسيبطل هذا الرابط وهذا الرمز.")]),
            Para(vec![Text("إذا لم تطلب ذلك، فتجاهل هذه الرسالة؛ فكلمة مرورك لم تتغير.")]),
            bye,
        ]),
        MailKind::PasswordChanged => ("تم تغيير كلمة المرور في سوق", vec![
            hello,
            Para(vec![Text("تم للتو تغيير كلمة المرور لحساب سوق المرتبط بالعنوان "), Ltr(v.email), Text("، وأُنهيت كل جلسة سُجّل دخولها قبل التغيير.")]),
            Para(vec![Text("عدد مفاتيح API السارية في هذا الحساب: "), Seg::Auto(v.live_keys.to_string()), Text(". لا يُلغي تغيير كلمة المرور هذه المفاتيح إلا إذا طُلب ذلك؛ فهي تبقى صالحة حتى تلغيها.")]),
            Para(vec![Text("إذا لم تغيّر كلمة المرور بنفسك، فأعد تعيينها الآن واطلب إلغاء كل مفاتيح API أيضًا:")]),
            Link("إعادة تعيين كلمة المرور", v.forgot_url),
            bye,
        ]),
    }
}

fn text_of(lang: &Lang, blocks: &[Block<'_>]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for block in blocks {
        match block {
            Para(segs) => parts.push(
                segs.iter()
                    .map(|s| match s {
                        Text(t) => *t,
                        Ltr(t) => t,
                        Seg::Auto(t) => t.as_str(),
                    })
                    .collect(),
            ),
            Link(_, url) if !url.is_empty() => parts.push((*url).to_owned()),
            Code(code) if !code.is_empty() => parts.push(code.clone()),
            Link(..) | Code(_) => {}
        }
    }
    parts.push(lang.footer.to_owned());
    let mut text = parts.join("\n\n");
    text.push('\n');
    text
}

/// Escapes the five HTML-significant characters; safe in text and in quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const BUTTON: &str = "display:inline-block;padding:12px 24px;background-color:#0f766e;color:#ffffff;text-decoration:none;border-radius:6px;font-weight:bold;";
const CODE: &str = "direction:ltr;text-align:left;white-space:pre-wrap;word-break:break-all;margin:0 0 16px;padding:12px;background-color:#f3f4f6;border-radius:6px;font-family:Menlo,Consolas,'Courier New',monospace;font-size:14px;";

fn html_of(lang: &Lang, subject: &str, blocks: &[Block<'_>]) -> String {
    let Lang { code, dir, align, font, brand, footer, .. } = lang;
    let mut body = String::new();
    for block in blocks {
        match block {
            Para(segs) => {
                body.push_str("<p style=\"margin:0 0 16px;\">");
                for seg in segs {
                    match seg {
                        Text(t) => body.push_str(&esc(t)),
                        Ltr(t) => body.push_str(&format!("<span dir=\"ltr\">{}</span>", esc(t))),
                        Seg::Auto(t) => body.push_str(&format!("<bdi>{}</bdi>", esc(t))),
                    }
                }
                body.push_str("</p>\n");
            }
            Link(label, url) if !url.is_empty() => {
                let href = esc(url);
                body.push_str(&format!(
                    "<p style=\"margin:0 0 8px;\"><a href=\"{href}\" style=\"{BUTTON}\">{}</a></p>\n\
                     <p dir=\"ltr\" style=\"margin:0 0 16px;font-size:13px;text-align:left;word-break:break-all;\"><a href=\"{href}\" style=\"color:#0f766e;\">{href}</a></p>\n",
                    esc(label)
                ));
            }
            Code(text) if !text.is_empty() => {
                body.push_str(&format!("<pre dir=\"ltr\" style=\"{CODE}\">{}</pre>\n", esc(text)));
            }
            Link(..) | Code(_) => {}
        }
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"{code}\" dir=\"{dir}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n</head>\n\
         <body dir=\"{dir}\" style=\"margin:0;padding:0;background-color:#f4f4f5;\">\n\
         <div dir=\"{dir}\" style=\"max-width:560px;margin:0 auto;padding:24px 16px;font-family:{font};font-size:16px;line-height:1.6;color:#1f2937;direction:{dir};text-align:{align};\">\n\
         <div style=\"background-color:#ffffff;border-radius:8px;padding:32px 24px;\">\n\
         <p style=\"margin:0 0 24px;font-size:22px;font-weight:bold;color:#0f766e;\">{brand}</p>\n{body}</div>\n\
         <p style=\"margin:16px 0 0;font-size:12px;color:#6b7280;\">{footer}</p>\n</div>\n</body>\n</html>\n",
        title = esc(subject),
        footer = esc(footer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [MailKind; 5] =
        [MailKind::Verify, MailKind::AlreadyRegistered, MailKind::Welcome, MailKind::Reset, MailKind::PasswordChanged];

    fn vars<'a>(name: Option<&'a str>, link: &'a str) -> MailVars<'a> {
        let (login_url, forgot_url) = ("https://souq.example/login", "https://souq.example/forgot");
        MailVars {
            name,
            email: "salma@example.com",
            link,
            token: "tok_ABC123",
            login_url,
            forgot_url,
            live_keys: 3,
        }
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn every_kind_and_locale_renders_whole_mails() {
        for (kind, locale) in KINDS.into_iter().flat_map(|k| [(k, "en"), (k, "ar")]) {
            let r = render(kind, locale, &vars(Some("Salma"), "https://souq.example/l?t=1"));
            let at = format!("{kind:?} {locale}");
            assert!(!r.subject.trim().is_empty() && !r.subject.contains(['\n', '\r']), "{at}");
            assert!(r.text.contains("Salma") && r.html.contains("Salma"), "{at}");
            assert!(r.text.contains("salma@example.com"), "{at}");
            assert!(r.html.starts_with("<!DOCTYPE html>") && r.html.ends_with("</html>\n"));
            for external in ["src=", "<link", "url(", "<script", "<style"] {
                assert!(!r.html.contains(external), "{at}: {external}");
            }
        }
    }

    #[test]
    fn arabic_is_right_to_left_and_english_left_to_right() {
        for kind in KINDS {
            let ar = render(kind, "ar", &vars(None, "https://souq.example/x"));
            assert!(ar.html.contains(r#"<html lang="ar" dir="rtl">"#), "{kind:?}");
            assert!(ar.html.contains(r#"<body dir="rtl""#) && ar.html.contains("text-align:right"));
            assert!(ar.subject.contains("سوق") && ar.text.starts_with("مرحبًا،\n"), "{kind:?}");
            let en = render(kind, "en", &vars(None, "https://souq.example/x"));
            assert!(en.html.contains(r#"<html lang="en" dir="ltr">"#) && !en.html.contains("rtl"));
            assert!(en.text.starts_with("Hello,\n"));
        }
        for (locale, code) in
            [("ar-EG", "ar"), ("AR_sa", "ar"), ("fr", "en"), ("arz", "en"), ("", "en")]
        {
            assert_eq!(lang_of(locale).code, code, "{locale}");
        }
    }

    #[test]
    fn links_and_token_are_in_both_parts_on_their_own_lines() {
        let link = "https://souq.example/verify/abc";
        for locale in ["en", "ar"] {
            for kind in [MailKind::Verify, MailKind::Reset] {
                let r = render(kind, locale, &vars(None, link));
                assert!(has_line(&r.text, link), "{kind:?} {locale}");
                assert!(r.html.contains(&format!("href=\"{link}\"")), "{kind:?} {locale}");
            }
            let reset = render(MailKind::Reset, locale, &vars(None, link));
            assert!(has_line(&reset.text, "tok_ABC123"));
            assert!(reset.text.contains(RESET_ENDPOINT) && reset.html.contains(RESET_ENDPOINT));
            assert!(reset.html.contains("&quot;token&quot;: &quot;tok_ABC123&quot;"));
            let again = render(MailKind::AlreadyRegistered, locale, &vars(None, ""));
            assert!(has_line(&again.text, "https://souq.example/login"));
            assert!(has_line(&again.text, "https://souq.example/forgot"));
            assert!(!again.text.contains("tok_ABC123"), "no token outside Reset");
        }
    }

    #[test]
    fn values_are_escaped_in_html_and_raw_in_text() {
        let evil = r#"<script>"x"&"#;
        let link = r#"https://souq.example/r?a=1&b="'><x>"#;
        let href = r#"href="https://souq.example/r?a=1&amp;b=&quot;&#39;&gt;&lt;x&gt;""#;
        for (kind, locale) in KINDS.into_iter().flat_map(|k| [(k, "en"), (k, "ar")]) {
            let r = render(kind, locale, &vars(Some(evil), link));
            assert!(r.text.contains(evil), "{kind:?} {locale}");
            assert!(r.html.contains("&lt;script&gt;&quot;x&quot;&amp;"), "{kind:?} {locale}");
            assert!(!r.html.contains("<script") && !r.html.contains("<x>"));
            if matches!(kind, MailKind::Verify | MailKind::Reset) {
                assert!(has_line(&r.text, link) && r.html.contains(href), "{kind:?} {locale}");
            }
        }
    }

    #[test]
    fn names_cannot_break_lines_or_reorder_text() {
        let r = render(MailKind::Welcome, "en", &vars(Some(" Sal\nma\u{202E}\r\t"), ""));
        assert!(r.text.starts_with("Hello Sal ma,\n"));
        let r = render(MailKind::Welcome, "en", &vars(Some(" \u{200F} "), ""));
        assert!(r.text.starts_with("Hello,\n"));
    }

    #[test]
    fn the_password_changed_mail_counts_the_live_keys() {
        for locale in ["en", "ar"] {
            let r = render(MailKind::PasswordChanged, locale, &vars(None, ""));
            assert!(r.text.contains(": 3."), "{locale}: {}", r.text);
            assert!(has_line(&r.text, "https://souq.example/forgot"), "{locale}");
        }
    }

    #[test]
    fn empty_links_and_tokens_are_left_out() {
        let r = render(MailKind::Reset, "en", &MailVars { token: "", ..vars(None, "") });
        assert!(!r.html.contains("href=\"\"") && !r.html.contains("<pre"));
        assert!(!r.text.contains(RESET_ENDPOINT) && !r.text.contains("\n\n\n"));
    }
}
