//! The one HTML page the edge serves: where a reset mail's link lands. The token rides
//! in the URL fragment, which the browser never sends, and the page posts it to the API.
use axum::response::Html;

const RESET_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Souq · Reset your password / إعادة تعيين كلمة المرور</title>
<style>
body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1f2933}
label{display:block;margin:1rem 0 .25rem}input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}
button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem}p.ar{direction:rtl;text-align:right}
#msg{margin-top:1rem;font-weight:600}
</style>
</head>
<body>
<h1>Souq</h1>
<form id="reset" hidden>
<p>Choose a new password (8 to 128 characters).</p>
<p class="ar" dir="rtl" lang="ar">اختر كلمة مرور جديدة (من 8 إلى 128 حرفًا).</p>
<label for="pw">New password / كلمة المرور الجديدة</label>
<input id="pw" type="password" autocomplete="new-password" minlength="8" maxlength="128" required>
<button>Set password / تعيين</button>
</form>
<form id="forgot" hidden>
<p>Enter your address and we will mail you a reset link.</p>
<p class="ar" dir="rtl" lang="ar">أدخل بريدك الإلكتروني وسنرسل إليك رابطًا لإعادة التعيين.</p>
<label for="email">Email / البريد الإلكتروني</label>
<input id="email" type="email" autocomplete="email" required>
<button>Send link / إرسال</button>
</form>
<p id="msg" role="status"></p>
<script>
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const msg = document.getElementById("msg");
async function post(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
  const j = await r.json().catch(() => ({}));
  msg.textContent = j.message || j.detail || ("HTTP " + r.status);
}
if (token) {
  history.replaceState(null, "", location.pathname);
  const f = document.getElementById("reset"); f.hidden = false;
  f.onsubmit = e => { e.preventDefault(); post("/api/v1/auth/reset-password", {token, password: document.getElementById("pw").value}); };
} else {
  const f = document.getElementById("forgot"); f.hidden = false;
  f.onsubmit = e => { e.preventDefault(); post("/api/v1/auth/forgot-password", {email: document.getElementById("email").value}); };
}
</script>
</body>
</html>
"#;

/// `GET /reset-password`: the landing page of reset links.
pub async fn reset_password() -> Html<&'static str> {
    Html(RESET_PAGE)
}
