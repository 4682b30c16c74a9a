# Build DeskLM for Windows: dist\desklm\ (the bundle) and dist\DeskLM-<version>-setup.exe.
#   powershell -ExecutionPolicy Bypass -File packaging\build_windows.ps1
# Needs Python 3.11+, Visual Studio Build Tools (C++), CMake, and Inno Setup 6 (iscc.exe).
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")
$venv = "build\venv"
python -m venv $venv
& "$venv\Scripts\python.exe" -m pip install -q --upgrade pip wheel
# a llama.cpp for any x86-64 CPU with AVX2, not only the build machine's
$env:CMAKE_ARGS = "-DGGML_NATIVE=OFF $env:CMAKE_ARGS"
& "$venv\Scripts\pip.exe" install -q --no-cache-dir "llama-cpp-python>=0.3.36,<0.4"
& "$venv\Scripts\pip.exe" install -q . "pyinstaller>=6.10"
& "$venv\Scripts\python.exe" packaging\make_icons.py
& "$venv\Scripts\pyinstaller.exe" --noconfirm --clean --distpath dist --workpath build\pyinstaller packaging\desklm.spec
$version = & "$venv\Scripts\python.exe" -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])"
$iscc = (Get-Command iscc.exe -ErrorAction SilentlyContinue).Source
if (-not $iscc) { $iscc = "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe" }
& $iscc "/DAppVersion=$version" packaging\windows\desklm.iss
