// Progressive enhancement only: copy-to-clipboard buttons. Every page works without this.
document.addEventListener('DOMContentLoaded', () => {
  for (const b of document.querySelectorAll('button.copy')) {
    if (!navigator.clipboard) continue;
    b.hidden = false;
    b.addEventListener('click', async () => {
      const from = b.dataset.copyFrom ? document.getElementById(b.dataset.copyFrom) : null;
      const text = from ? [...from.querySelectorAll('code')].map(c => c.textContent).join('\n') : b.dataset.copy;
      try { await navigator.clipboard.writeText(text); b.textContent = 'Copied'; } catch (_) { b.textContent = 'Copy failed'; }
    });
  }
});
