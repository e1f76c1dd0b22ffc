# escape=`

FROM mcr.microsoft.com/windows/servercore:ltsc2022
SHELL ["powershell", "-Command"]
RUN New-Item -ItemType Directory C:\Example `
    -Force
COPY testfile.txt c:\
ENV A="x`"y" B=c:\path
WORKDIR c:\\Users\\app
